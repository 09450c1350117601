/**
 * A console takes every key, Tab included, for the guest. Ctrl+] (as in
 * `virsh console` and telnet) hands the keyboard back to the page.
 */
export function isReleaseKey(event: KeyboardEvent): boolean {
  return event.ctrlKey && !event.altKey && !event.metaKey && (event.key === ']' || event.code === 'BracketRight');
}

export const releaseKeyHint = 'Keys go to the guest; Ctrl+] leaves the console.';
