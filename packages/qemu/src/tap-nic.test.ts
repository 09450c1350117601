import { describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { buildQemuArgv } from './argv.js';
import { nicNetdevArgs } from './devices.js';
import type { NicConfig, QemuLaunchConfig } from './launch-config.js';

function config(nic: NicConfig): QemuLaunchConfig {
  return {
    name: 'web-1', uuid: '6f1c1f1e-2b7a-4c52-9a43-0d2f0b6c9e11', accel: 'tcg', cpus: 1, memoryMiB: 128, cpuModel: 'qemu64',
    disks: [{ nodeName: 'disk0', path: '/var/lib/drover/vms/web-1/disk0.qcow2', format: 'qcow2' }],
    nics: [nic],
    boot: { kind: 'kernel', kernel: '/boot/vmlinuz', cmdline: 'console=ttyS0' },
    qmpSocket: '/run/drover/web-1/qmp.sock', serialSocket: '/run/drover/web-1/serial.sock', serialLog: '/var/log/drover/web-1/serial.log', pidFile: '/run/drover/web-1/qemu.pid',
  };
}

describe('tap NICs (VMs on Drover networks)', () => {
  it('opens the existing tap with no scripts, on the command line and for hotplug', () => {
    const nic: NicConfig = { id: 'net0', mac: '52:54:00:e7:00:01', mode: 'tap', ifname: 'dtweb1', hostForwards: [] };
    const argv = buildQemuArgv(config(nic));
    expect(argv[argv.indexOf('-netdev') + 1]).toBe('tap,id=net0,ifname=dtweb1,script=no,downscript=no');
    expect(nicNetdevArgs(nic)).toEqual({ type: 'tap', id: 'net0', ifname: 'dtweb1', script: 'no', downscript: 'no' });
  });

  it('refuses a tap name that would inject options, a missing tap, and forwards on a tap', () => {
    for (const ifname of ['dt1,script=/tmp/x', '', 'a-name-that-is-too-long', undefined]) {
      expect(() => buildQemuArgv(config({ id: 'net0', mac: '52:54:00:e7:00:01', mode: 'tap', ifname, hostForwards: [] }))).toThrow(DroverError);
    }
    expect(() => buildQemuArgv(config({ id: 'net0', mac: '52:54:00:e7:00:01', mode: 'tap', ifname: 'dt1', hostForwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 }] })))
      .toThrow(/port forwards exist only in user mode/);
  });
});
