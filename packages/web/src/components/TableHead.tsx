/** A column of a table head: its header text, or the text and a class for the header cell. */
export type Column = string | { label: string; className: string };

/**
 * A table's head row: one column header per entry of `columns`, then, with
 * `actions`, a last column for the row's buttons whose header "Actions" only
 * screen readers see.
 */
export function TableHead({ columns, actions = false }: { columns: readonly Column[]; actions?: boolean }) {
  return (
    <thead>
      <tr>
        {columns.map((column) =>
          typeof column === 'string' ? (
            <th key={column} scope="col">
              {column}
            </th>
          ) : (
            <th key={column.label} scope="col" className={column.className}>
              {column.label}
            </th>
          ),
        )}
        {actions && (
          <th scope="col">
            <span className="visually-hidden">Actions</span>
          </th>
        )}
      </tr>
    </thead>
  );
}
