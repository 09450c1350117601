import { execFileSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { buildQemuArgv } from './argv.js';
import { plugDisk, plugNic, releaseDiskNodes, releaseNicBackend, unplugDevice } from './hotplug.js';
import { killProcess, spawnQemu, waitForExit } from './process.js';
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

/**
 * The QEMU side of hotplug on a real QEMU that never runs its guest (-S): what
 * QEMU holds after each plug and after each failed one. That the guest sees the
 * devices is shown by the agent's hotplug test, with a booted appliance.
 */
describe('hotplug on a real QEMU', () => {
  let dir: string;
  let pid: number;
  let qmp: QmpClient;

  const peripherals = async () => (await qmp.qomList('/machine/peripheral')).map((child) => child.name).filter((name) => !name.startsWith('rp') && name !== 'type').sort();
  const nodes = async () => (await qmp.execute<Array<{ 'node-name': string }>>('query-named-block-nodes')).map((node) => node['node-name']).sort();

  beforeAll(async () => {
    expect(kernel).toBeDefined();
    dir = await mkdtemp(join(tmpdir(), 'drover-hotplug-'));
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'extra.qcow2'), '16M']);
    const argv = buildQemuArgv({
      name: 'hotplug',
      uuid: '3a4b5c6d-7e8f-4a0b-8c1d-2e3f4a5b6c7d',
      accel: 'tcg',
      cpus: 1,
      memoryMiB: 64,
      cpuModel: 'qemu64',
      disks: [],
      nics: [],
      rootPorts: [0, 1, 2],
      boot: { kind: 'kernel', kernel: kernel as string, cmdline: 'console=ttyS0' },
      qmpSocket: join(dir, 'qmp.sock'),
      serialSocket: join(dir, 'serial.sock'),
      serialLog: join(dir, 'serial.log'),
      pidFile: join(dir, 'qemu.pid'),
      startPaused: true,
      sandbox: true,
    });
    const spawned = await spawnQemu(argv, { logFile: join(dir, 'qemu.log'), keepQmp: true });
    pid = spawned.pid;
    qmp = spawned.qmp!;
  });

  afterAll(async () => {
    await qmp?.close();
    if (pid) {
      await killProcess(pid, 'SIGKILL');
      await waitForExit(pid, 5_000);
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('plugs a disk and a NIC into free root ports', async () => {
    await plugDisk(qmp, { nodeName: 'disk1', path: join(dir, 'extra.qcow2'), format: 'qcow2', port: 0 });
    await plugNic(qmp, { id: 'net1', mac: '52:54:00:aa:bb:01', mode: 'user', hostForwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: await freePort(), guestPort: 80 }], port: 1 });
    expect(await peripherals()).toEqual(['disk1-dev', 'net1-dev']);
    expect(await nodes()).toEqual(['disk1', 'disk1-file']);
    const block = await qmp.queryBlock();
    expect(block.find((b) => b.qdev?.includes('disk1-dev'))?.inserted?.file).toBe(join(dir, 'extra.qcow2'));
  });

  it('leaves nothing behind when a plug fails', async () => {
    const missing = await rejectionOf(plugDisk(qmp, { nodeName: 'disk2', path: join(dir, 'missing.qcow2'), format: 'qcow2', port: 2 }));
    expect(missing.message).toMatch(/No such file/);
    // The nodes open, the device does not: there is no such port.
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', join(dir, 'other.qcow2'), '16M']);
    const noPort = await rejectionOf(plugDisk(qmp, { nodeName: 'disk3', path: join(dir, 'other.qcow2'), format: 'qcow2', port: 5 }));
    expect(noPort.message).toMatch(/Bus 'rp5' not found/);
    expect(await nodes()).toEqual(['disk1', 'disk1-file']);

    const port = await freePort();
    await plugNic(qmp, { id: 'net2', mac: '52:54:00:aa:bb:02', mode: 'user', hostForwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: port, guestPort: 80 }], port: 2 });
    // The same host port again: the backend is refused, and nothing of net3 stays.
    const clash = await rejectionOf(plugNic(qmp, { id: 'net3', mac: '52:54:00:aa:bb:03', mode: 'user', hostForwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: port, guestPort: 80 }], port: 0 }));
    expect(clash.message).toMatch(/host forwarding rule/);
    // A device that cannot be added: its backend is removed again (the id is free for the next try).
    await expect(plugNic(qmp, { id: 'net3', mac: '52:54:00:aa:bb:03', mode: 'user', hostForwards: [], port: 7 })).rejects.toThrow(/Bus 'rp7' not found/);
    await qmp.netdevAdd({ type: 'user', id: 'net3' });
    await qmp.netdevDel('net3');
    expect(await peripherals()).toEqual(['disk1-dev', 'net1-dev', 'net2-dev']);
  });

  it('reports an unplug the guest does not answer as pending, and an unknown device as gone', async () => {
    // The guest never runs (-S): the request stays pending, asking again waits again.
    expect(await unplugDevice(qmp, 'disk1-dev', 300)).toBe(false);
    expect(await unplugDevice(qmp, 'disk1-dev', 300)).toBe(false);
    expect(await peripherals()).toContain('disk1-dev');
    expect(await unplugDevice(qmp, 'nothing-dev', 300)).toBe(true);
    // Nodes of a device that is still there cannot go; unknown ones are fine.
    await expect(releaseDiskNodes(qmp, 'disk1')).rejects.toThrow(/in use/);
    await releaseDiskNodes(qmp, 'disk9');
    await releaseNicBackend(qmp, 'net9');
  });
});
