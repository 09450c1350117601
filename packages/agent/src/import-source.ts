import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { errors } from '@drover/core';

/**
 * The real path of a file an API caller asks to import, if it lies inside one
 * of `dirs`. Both sides are judged with links resolved, so a link placed inside
 * an allowed directory cannot lead out of it (the agent and the manager run as
 * root: a caller must not import /etc/shadow). 404 when the file does not exist,
 * 403 when it lies outside every directory.
 * @example await resolveImportSource('/var/lib/drover/agent/import/disk.qcow2', ['/var/lib/drover/agent/import'])
 */
export async function resolveImportSource(requested: string, dirs: readonly string[]): Promise<string> {
  const source = await realpath(path.resolve(requested)).catch(() => {
    throw errors.notFound('Import source', requested);
  });
  const allowed = await Promise.all(dirs.map((dir) => realpath(dir).catch(() => undefined)));
  if (!allowed.some((dir) => dir !== undefined && source.startsWith(dir === '/' ? dir : dir + path.sep))) {
    throw errors.forbidden(`Importing "${requested}" is not allowed: imports are read only from ${dirs.join(', ') || '(no directory configured)'}`);
  }
  return source;
}
