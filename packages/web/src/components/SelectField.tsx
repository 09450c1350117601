/** A choice of a select: its value (also its text), or a value with its own key and text. */
export type SelectOption = string | { key: string; value: string; label: string };

/** A form's select wrapped in its label ("Label <select>"), read by name from the submitted form. */
export function SelectField({ label, name, options, required }: { label: string; name: string; options: readonly SelectOption[]; required?: boolean }) {
  return (
    <label>
      {label}{' '}
      <select name={name} required={required}>
        {options.map((option) =>
          typeof option === 'string' ? (
            <option key={option} value={option}>
              {option}
            </option>
          ) : (
            <option key={option.key} value={option.value}>
              {option.label}
            </option>
          ),
        )}
      </select>
    </label>
  );
}
