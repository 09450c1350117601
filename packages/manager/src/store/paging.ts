import type { ListQuery, Page } from './types.js';

/** Every item of a paged list (1000 a page), with `filter` when given. */
export async function listEvery<T, F = never>(list: (query: ListQuery<F>) => Promise<Page<T>>, filter?: F): Promise<T[]> {
  const items: T[] = [];
  let after: string | undefined;
  do {
    const page = await list({ limit: 1000, ...(after ? { after } : {}), ...(filter ? { filter } : {}) });
    items.push(...page.items);
    after = page.next;
  } while (after);
  return items;
}
