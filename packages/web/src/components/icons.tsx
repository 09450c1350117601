/**
 * The "×" of close and dismiss buttons, drawn rather than typed: the button's
 * name is its aria-label alone (a "×" character in the button would be text
 * that axe's label-in-name rule cannot match against that label).
 */
export function CloseIcon() {
  return (
    <svg className="icon" aria-hidden="true" focusable="false" viewBox="0 0 16 16" width="0.75em" height="0.75em">
      <path d="M3 3l10 10M13 3L3 13" stroke="currentColor" strokeWidth="2" strokeLinecap="round" fill="none" />
    </svg>
  );
}
