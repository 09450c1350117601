import { execFileSync, spawn } from 'node:child_process';
import { chmod, mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { buildQemuArgv } from './argv.js';
import type { QemuLaunchConfig } from './launch-config.js';
import { isSameProcess, killProcess, readProcessInfo, readProcessStat, spawnQemu, waitForExit } from './process.js';
import { QmpClient } from './qmp-client.js';

const kernel = readdirSync('/boot')
  .filter((name) => /^vmlinuz-.*-cloud-amd64$/.test(name))
  .map((name) => join('/boot', name))[0];

/** A port that was free a moment ago, for a loopback host forward. */
async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}


describe('spawnQemu and /proc helpers with real QEMU', () => {
  let dir: string;
  const started: number[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-process-'));
  });

  afterAll(async () => {
    for (const pid of started) {
      await killProcess(pid, 'SIGKILL');
      await waitForExit(pid, 5_000);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('starts a sandboxed, paused VM from buildQemuArgv with commas in every path', async () => {
    expect(kernel).toBeDefined();
    const vmDir = join(dir, 'vm,1');
    await mkdir(vmDir);
    const disk = join(vmDir, 'disk,0.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '32M']);
    const config: QemuLaunchConfig = {
      name: 'web,1',
      uuid: '0e3c2a4e-8f1b-4b8e-9a57-1c2d3e4f5a6b',
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 64,
      cpuModel: 'qemu64',
      disks: [{ nodeName: 'disk0', path: disk, format: 'qcow2' }],
      nics: [
        {
          id: 'net0',
          mac: '52:54:00:12:34:56',
          mode: 'user',
          hostForwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: await freePort(), guestPort: 80 }],
        },
      ],
      boot: { kind: 'kernel', kernel: kernel as string, cmdline: 'console=ttyS0' },
      qmpSocket: join(vmDir, 'qmp.sock'),
      serialSocket: join(vmDir, 'serial.sock'),
      serialLog: join(vmDir, 'serial.log'),
      vncSocket: join(vmDir, 'vnc.sock'),
      pidFile: join(vmDir, 'qemu.pid'),
      startPaused: true,
      sandbox: true,
    };
    const argv = buildQemuArgv(config);
    const logFile = join(vmDir, 'qemu.log');
    const { pid, startTime } = await spawnQemu(argv, { logFile });
    started.push(pid);

    const info = await readProcessInfo(pid);
    expect(info).toMatchObject({ pid, alive: true, uid: 0, seccompMode: 2, startTime });
    expect(info?.cmdline).toEqual(argv);
    expect(await isSameProcess(pid, startTime)).toBe(true);
    expect(await isSameProcess(pid, startTime + 1)).toBe(false);
    expect((await readFile(config.pidFile, 'utf8')).trim()).toBe(String(pid));
    expect((await stat(config.serialSocket)).isSocket()).toBe(true);
    expect((await stat(config.vncSocket as string)).isSocket()).toBe(true);

    const qmp = await QmpClient.connect(config.qmpSocket);
    try {
      expect(await qmp.queryStatus()).toEqual({ status: 'prelaunch', running: false });
      const block = await qmp.queryBlock();
      expect(block.map((b) => b.inserted?.['node-name'])).toEqual(['disk0']);
      expect(block[0]?.inserted?.file).toBe(disk);
    } finally {
      await qmp.close();
    }

    // A second QEMU on the same image must fail on the image lock, with the reason in the error.
    const second = buildQemuArgv({
      ...config,
      uuid: '0e3c2a4e-8f1b-4b8e-9a57-1c2d3e4f5a6c',
      nics: [],
      qmpSocket: join(vmDir, 'qmp2.sock'),
      serialSocket: join(vmDir, 'serial2.sock'),
      vncSocket: undefined,
      pidFile: join(vmDir, 'qemu2.pid'),
    });
    const locked = await rejectionOf(spawnQemu(second, { logFile: join(vmDir, 'qemu2.log') }));
    expect(locked.code).toBe('unavailable');
    expect(locked.message).toContain('lock');

    expect(await killProcess(pid, 'SIGTERM', { startTime })).toBe(true);
    expect(await waitForExit(pid, 10_000)).toBe(true);
    expect(await isSameProcess(pid, startTime)).toBe(false);
    expect(await killProcess(pid, 'SIGTERM', { startTime })).toBe(false);
  });

  it('rejects with the log tail when QEMU exits during start-up', async () => {
    const logFile = join(dir, 'bad.log');
    const argv = [
      'qemu-system-x86_64', '-machine', 'none', '-nodefaults', '-display', 'none',
      '-blockdev', `driver=file,filename=${join(dir, 'missing.img')},node-name=f0`,
      '-qmp', `unix:${join(dir, 'bad.sock')},server=on,wait=off`,
    ];
    const error = await rejectionOf(spawnQemu(argv, { logFile }));
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('exited during start-up with code 1');
    expect(error.message).toContain('missing.img');
    expect(error.details.log).toContain('No such file or directory');
  });

  it('rejects a binary that does not exist as unavailable', async () => {
    const error = await rejectionOf(
      spawnQemu(['qemu-system-x86_64'], { logFile: join(dir, 'nobin.log'), binary: join(dir, 'no-such-qemu') }),
    );
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('no-such-qemu');
  });

  it('runs QEMU as the given user, detached in its own session, and survives without QMP', async () => {
    // The unprivileged QEMU must reach its socket directory through the test directory.
    await chmod(dir, 0o711);
    const runDir = join(dir, 'run-nobody');
    await mkdir(runDir);
    await chmod(runDir, 0o777);
    const argv = ['qemu-system-x86_64', '-machine', 'none', '-nodefaults', '-display', 'none'];
    const { pid, startTime } = await spawnQemu(argv, { logFile: join(dir, 'nobody.log'), uid: 65534, gid: 65534, cwd: runDir });
    started.push(pid);
    const info = await readProcessInfo(pid);
    expect(info?.uid).toBe(65534);
    expect(info?.seccompMode).toBe(0);
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // setsid: the process leads its own session (field 6 is the session id).
    expect(Number(fields[6 - 3])).toBe(pid);
    expect(await waitForExit(pid, 100)).toBe(false);
    expect(await killProcess(pid, 'SIGKILL', { startTime })).toBe(true);
    expect(await waitForExit(pid, 10_000)).toBe(true);
  });

  it('counts a zombie as exited', async () => {
    // The shell forks `sleep 0` and then becomes `sleep 30`, which never reaps it.
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
    try {
      const zombiePid = await new Promise<number>((resolve) => parent.stdout.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
      expect(await waitForExit(zombiePid, 10_000)).toBe(true);
      const info = await readProcessInfo(zombiePid);
      expect(info?.state).toBe('Z');
      expect(info?.alive).toBe(false);
      // The one-read check says the same.
      expect(await readProcessStat(zombiePid)).toEqual({ pid: zombiePid, alive: false, state: 'Z', startTime: info?.startTime });
    } finally {
      if (parent.pid !== undefined) await killProcess(parent.pid, 'SIGKILL');
    }
  });

  it('reports gone processes and refuses dangerous pids', async () => {
    // Pid numbers are below pid_max (at most 2^22); this one cannot exist.
    expect(await readProcessInfo(4_194_305)).toBeUndefined();
    expect(await readProcessStat(4_194_305)).toBeUndefined();
    const self = await readProcessInfo(process.pid);
    // (Its state letter may change between the two reads: running, sleeping.)
    expect(await readProcessStat(process.pid)).toMatchObject({ pid: process.pid, alive: true, startTime: self?.startTime });
    expect(await killProcess(4_194_305, 'SIGTERM')).toBe(false);
    expect(await waitForExit(4_194_305, 10)).toBe(true);
    for (const pid of [0, 1, -1, 1.5]) {
      await expect(killProcess(pid)).rejects.toMatchObject({ code: 'invalid' });
    }
  });
});
