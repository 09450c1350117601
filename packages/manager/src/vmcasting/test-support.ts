import { execFileSync } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';

/**
 * A release of the web appliance built from its root disk: `/srv/www/release.txt`
 * says `version`, `/etc/drover/appliance` carries it (the READY line shows it);
 * `broken` replaces the service with one that fails (DROVER-FAILED at boot).
 * Files are written into the ext4 with debugfs, nothing is mounted.
 */
export function buildWebRelease(rootDisk: string, dir: string, version: string, options: { broken?: boolean } = {}): string {
  const work = path.join(dir, `work-${version}`);
  mkdirSync(work, { recursive: true });
  const raw = path.join(work, 'root.raw');
  execFileSync('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', rootDisk, raw]);
  writeFileSync(path.join(work, 'appliance'), `DROVER_APPLIANCE='web'\nDROVER_VERSION='${version}'\n`);
  writeFileSync(path.join(work, 'release.txt'), `release ${version}\n`);
  chmodSync(path.join(work, 'release.txt'), 0o644);
  chmodSync(path.join(work, 'appliance'), 0o644);
  const commands = [`cd /etc/drover`, `rm appliance`, `write ${path.join(work, 'appliance')} appliance`, `cd /srv/www`, `write ${path.join(work, 'release.txt')} release.txt`];
  if (options.broken) {
    writeFileSync(path.join(work, 'service'), '#!/bin/sh\necho "web: broken on purpose" >&2\nexit 1\n');
    chmodSync(path.join(work, 'service'), 0o755);
    commands.push('cd /etc/drover', 'rm service', `write ${path.join(work, 'service')} service`);
  }
  writeFileSync(path.join(work, 'cmds'), commands.join('\n') + '\n');
  execFileSync('debugfs', ['-w', '-f', path.join(work, 'cmds'), raw], { stdio: 'ignore' });
  const out = path.join(dir, `web-${version}.qcow2`);
  execFileSync('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', raw, out]);
  rmSync(work, { recursive: true, force: true });
  return out;
}

/**
 * A guest package made under `dir`, as base64 of its tar.gz: its install
 * script puts `motd.txt` saying "motd `version`" into the web appliance's
 * document root.
 */
export function motdPackage(dir: string, version: string): string {
  const root = path.join(dir, `motd-${version}`);
  mkdirSync(path.join(root, 'files'), { recursive: true });
  writeFileSync(path.join(root, 'files', 'motd.txt'), `motd ${version}\n`);
  writeFileSync(path.join(root, 'install'), '#!/bin/sh\nset -e\ncp files/motd.txt /srv/www/motd.txt.new\nmv /srv/www/motd.txt.new /srv/www/motd.txt\n', { mode: 0o755 });
  const out = path.join(dir, `motd-${version}.tar.gz`);
  execFileSync('tar', ['--format=ustar', '-czf', out, '-C', root, '.']);
  return readFileSync(out).toString('base64');
}
