import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import { errors } from '@drover/core';

const run = promisify(execFile);

export interface Account {
  name: string;
  uid: number;
  gid: number;
}

async function lookup(name: string): Promise<Account | undefined> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  for (const line of passwd.split('\n')) {
    const [user, , uid, gid] = line.split(':');
    if (user === name && uid !== undefined && gid !== undefined) return { name, uid: Number(uid), gid: Number(gid) };
  }
  return undefined;
}

/**
 * The unprivileged account every QEMU runs as. It owns no login shell and no
 * home; it can read only what the agent hands to it (disks, kernels, sockets).
 */
export async function ensureQemuAccount(name: string): Promise<Account> {
  const existing = await lookup(name);
  if (existing) return existing;
  if (process.getuid?.() !== 0) {
    throw errors.unavailable(`Cannot create the QEMU account "${name}": the agent is not running as root`);
  }
  try {
    await run('useradd', ['--system', '--user-group', '--no-create-home', '--home-dir', '/nonexistent', '--shell', '/usr/sbin/nologin', name], { timeout: 10_000 });
  } catch (cause) {
    // Another agent on the same machine may have created it a moment ago.
    const raced = await lookup(name);
    if (raced) return raced;
    throw errors.unavailable(`Cannot create the QEMU account "${name}": ${(cause as Error).message}`);
  }
  const created = await lookup(name);
  if (!created) throw errors.unavailable(`Account "${name}" is missing after useradd`);
  return created;
}
