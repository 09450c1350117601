import { describe, expect, it } from 'vitest';
import { clean, formatAge, formatFields, formatTable } from './output.js';

describe('output', () => {
  it('aligns table columns with two spaces and no trailing blanks', () => {
    const table = formatTable(
      ['NAME', 'STATE', 'HOST'],
      [
        ['web1', 'running', 'h1'],
        ['database-2', 'stopped', '-'],
      ],
    );
    expect(table).toBe(['NAME        STATE    HOST', 'web1        running  h1', 'database-2  stopped  -', ''].join('\n'));
  });

  it('prints the header of an empty table', () => {
    expect(formatTable(['NAME', 'STATE'], [])).toBe('NAME  STATE\n');
  });

  it('makes server text inert on a terminal', () => {
    expect(clean('evil\x1b]0;pwned\x07name')).toBe('evil\uFFFD]0;pwned\uFFFDname');
    expect(clean('two\nlines')).toBe('two lines');
    expect(formatTable(['A'], [['x\x1b[2Jy']])).toBe('A\nx\uFFFD[2Jy\n');
  });

  it('aligns key/value blocks', () => {
    expect(formatFields([['Name', 'web1'], ['Last error', '-']])).toBe('Name:        web1\nLast error:  -\n');
  });

  it('prints coarse ages', () => {
    const now = Date.parse('2025-01-01T12:00:00Z');
    expect(formatAge('2025-01-01T11:59:30Z', now)).toBe('30s');
    expect(formatAge('2025-01-01T11:30:00Z', now)).toBe('30m');
    expect(formatAge('2025-01-01T06:00:00Z', now)).toBe('6h');
    expect(formatAge('2024-12-25T12:00:00Z', now)).toBe('7d');
    expect(formatAge(null, now)).toBe('-');
  });
});
