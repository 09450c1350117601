import { sql, type Expression, type SqlBool } from 'kysely';
import type { Backend } from '../backend.js';
import { isUuid } from '../record-codec.js';
import type { LabelFilter, OneOrMany } from '../types.js';

/** Turns one filter value of a list query into a WHERE condition. */
export type FilterCondition<V> = (value: V, backend: Backend) => Expression<SqlBool>;

/** The condition of every filter key of F. */
export type FilterSpec<F> = { readonly [K in keyof F]-?: FilterCondition<Exclude<F[K], undefined>> };

const never = sql<SqlBool>`1 = 0`;

function oneOf(column: string, values: readonly unknown[]): Expression<SqlBool> {
  if (values.length === 0) return never;
  const first = values[0];
  if (values.length === 1) return sql<SqlBool>`${sql.ref(column)} = ${first}`;
  return sql<SqlBool>`${sql.ref(column)} in (${sql.join(values)})`;
}

export const filterBy = {
  /** Equal to the value, or to any of several. */
  equals:
    (column: string): FilterCondition<OneOrMany<string>> =>
    (value) =>
      Array.isArray(value) ? oneOf(column, value) : oneOf(column, [value]),

  /** A boolean column (stored as 0/1 or boolean; 0/1 compares right on both). */
  flag:
    (column: string): FilterCondition<boolean> =>
    (value) =>
      sql<SqlBool>`${sql.ref(column)} = ${value ? 1 : 0}`,

  /**
   * A reference to another record; `null` means "none". Values that are no UUID
   * match nothing (PostgreSQL would refuse them as uuid input).
   */
  reference:
    (column: string): FilterCondition<string | null> =>
    (value) => {
      if (value === null) return sql<SqlBool>`${sql.ref(column)} is null`;
      return isUuid(value) ? oneOf(column, [value.toLowerCase()]) : never;
    },

  label:
    (column: string): FilterCondition<LabelFilter> =>
    (value, backend) =>
      backend.jsonObjectHas(column, value.key, value.value),

  contains:
    (column: string): FilterCondition<string> =>
    (value, backend) =>
      backend.textContains(column, value),

  arrayContains:
    (column: string): FilterCondition<string> =>
    (value, backend) =>
      backend.jsonArrayContains(column, value),
};
