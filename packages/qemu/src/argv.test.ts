import { describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { buildQemuArgv, escapeOptionValue, findQmpSocket, qemuMemoryArg, splitOptionString } from './argv.js';
import type { QemuLaunchConfig } from './launch-config.js';

function baseConfig(overrides: Partial<QemuLaunchConfig> = {}): QemuLaunchConfig {
  return {
    name: 'web-1',
    uuid: '6f1c1f1e-2b7a-4c52-9a43-0d2f0b6c9e11',
    accel: 'tcg',
    cpus: 2,
    memoryMiB: 256,
    cpuModel: 'qemu64',
    disks: [{ nodeName: 'disk0', path: '/var/lib/drover/vms/web-1/disk0.qcow2', format: 'qcow2' }],
    nics: [
      {
        id: 'net0',
        mac: '52:54:00:AB:CD:01',
        mode: 'user',
        hostForwards: [
          { protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 8080, guestPort: 80 },
          { protocol: 'udp', hostAddress: '127.0.0.1', hostPort: 5353, guestPort: 53 },
        ],
      },
    ],
    boot: { kind: 'kernel', kernel: '/boot/vmlinuz', initrd: '/boot/initrd.img', cmdline: 'console=ttyS0 quiet' },
    qmpSocket: '/run/drover/web-1/qmp.sock',
    serialSocket: '/run/drover/web-1/serial.sock',
    serialLog: '/var/log/drover/web-1/serial.log',
    pidFile: '/run/drover/web-1/qemu.pid',
    ...overrides,
  };
}

function invalid(config: QemuLaunchConfig): DroverError {
  try {
    buildQemuArgv(config);
  } catch (error) {
    if (error instanceof DroverError) return error;
    throw error;
  }
  throw new Error('expected buildQemuArgv to refuse the config');
}

describe('buildQemuArgv', () => {
  it('gives a TCG guest 8 KiB less RAM, never a multiple of 256 KiB (QEMU 7.2 loses pages when migrating those live), and a KVM guest its MiB', () => {
    const memoryOf = (config: QemuLaunchConfig) => {
      const argv = buildQemuArgv(config);
      return argv[argv.indexOf('-m') + 1];
    };
    for (const memoryMiB of [16, 128, 256, 4096]) {
      expect(memoryOf(baseConfig({ memoryMiB }))).toBe(`${memoryMiB * 1024 - 8}k`);
      expect(((memoryMiB * 1024 - 8) * 1024) % (256 * 1024)).not.toBe(0);
      // QEMU rounds -m up to 8 KiB: the size stays as given.
      expect(((memoryMiB * 1024 - 8) * 1024) % 8192).toBe(0);
      expect(memoryOf(baseConfig({ memoryMiB, accel: 'kvm' }))).toBe(`${memoryMiB}M`);
    }
    expect(qemuMemoryArg('tcg', 256)).toBe('262136k');
    expect(qemuMemoryArg('kvm', 256)).toBe('256M');
  });

  it('builds the full command line of a kernel-booted VM', () => {
    expect(buildQemuArgv(baseConfig({ sandbox: true }))).toEqual([
      'qemu-system-x86_64',
      '-name', 'guest=web-1,debug-threads=on',
      '-uuid', '6f1c1f1e-2b7a-4c52-9a43-0d2f0b6c9e11',
      '-msg', 'timestamp=on',
      '-nodefaults', '-no-user-config',
      '-display', 'none',
      '-machine', 'q35',
      '-accel', 'tcg',
      '-cpu', 'qemu64',
      '-smp', '2',
      '-m', '262136k',
      '-sandbox', 'on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny',
      '-pidfile', '/run/drover/web-1/qemu.pid',
      '-qmp', 'unix:/run/drover/web-1/qmp.sock,server=on,wait=off',
      '-chardev',
      'socket,id=serial0,path=/run/drover/web-1/serial.sock,server=on,wait=off,logfile=/var/log/drover/web-1/serial.log,logappend=on',
      '-serial', 'chardev:serial0',
      '-blockdev', 'driver=file,filename=/var/lib/drover/vms/web-1/disk0.qcow2,node-name=disk0-file,read-only=off,locking=on',
      '-blockdev', 'driver=qcow2,file=disk0-file,node-name=disk0,read-only=off',
      '-device', 'virtio-blk-pci,drive=disk0,id=disk0-dev',
      '-netdev', 'user,id=net0,hostfwd=tcp:127.0.0.1:8080-:80,hostfwd=udp:127.0.0.1:5353-:53',
      '-device', 'virtio-net-pci,netdev=net0,id=net0-dev,mac=52:54:00:ab:cd:01,romfile=',
      '-kernel', '/boot/vmlinuz',
      '-initrd', '/boot/initrd.img',
      '-append', 'console=ttyS0 quiet',
    ]);
  });

  it('boots from a CD-ROM on the AHCI bus first, then the disk, strictly', () => {
    const argv = buildQemuArgv(
      baseConfig({
        machine: 'pc-q35-7.2',
        accel: 'kvm',
        cpuModel: 'host',
        boot: { kind: 'cdrom' },
        nics: [],
        disks: [
          { nodeName: 'disk0', path: '/images/disk0.raw', format: 'raw', serial: 'DRV-0' },
          { nodeName: 'cd0', path: '/images/install.iso', format: 'raw', media: 'cdrom' },
          { nodeName: 'cd1', path: '/images/drivers.iso', format: 'raw', media: 'cdrom' },
        ],
      }),
      '/usr/local/bin/qemu',
    );
    expect(argv[0]).toBe('/usr/local/bin/qemu');
    expect(argv.slice(argv.indexOf('-machine'), argv.indexOf('-machine') + 6)).toEqual([
      '-machine', 'pc-q35-7.2', '-accel', 'kvm', '-cpu', 'host',
    ]);
    const blockArgs = argv.slice(argv.indexOf('-blockdev'), argv.indexOf('-boot'));
    expect(blockArgs).toEqual([
      '-blockdev', 'driver=file,filename=/images/disk0.raw,node-name=disk0-file,read-only=off,locking=on',
      '-blockdev', 'driver=raw,file=disk0-file,node-name=disk0,read-only=off',
      '-device', 'virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=2,serial=DRV-0',
      '-blockdev', 'driver=file,filename=/images/install.iso,node-name=cd0-file,read-only=on,locking=on',
      '-blockdev', 'driver=raw,file=cd0-file,node-name=cd0,read-only=on',
      '-device', 'ide-cd,drive=cd0,id=cd0-dev,bus=ide.0,bootindex=1',
      '-blockdev', 'driver=file,filename=/images/drivers.iso,node-name=cd1-file,read-only=on,locking=on',
      '-blockdev', 'driver=raw,file=cd1-file,node-name=cd1,read-only=on',
      '-device', 'ide-cd,drive=cd1,id=cd1-dev,bus=ide.1',
    ]);
    expect(argv.slice(-2)).toEqual(['-boot', 'strict=on']);
    expect(argv).not.toContain('-kernel');
    expect(argv).not.toContain('-sandbox');
  });

  it('honours explicit boot indexes and read-only disks on a disk boot', () => {
    const argv = buildQemuArgv(
      baseConfig({
        boot: { kind: 'disk' },
        disks: [
          { nodeName: 'data', path: '/images/data.qcow2', format: 'qcow2', readOnly: true },
          { nodeName: 'root', path: '/images/root.qcow2', format: 'qcow2', bootIndex: 0 },
        ],
      }),
    );
    expect(argv).toContain('driver=file,filename=/images/data.qcow2,node-name=data-file,read-only=on,locking=on');
    expect(argv).toContain('driver=qcow2,file=data-file,node-name=data,read-only=on');
    expect(argv).toContain('virtio-blk-pci,drive=data,id=data-dev');
    expect(argv).toContain('virtio-blk-pci,drive=root,id=root-dev,bootindex=0');
  });

  it('gives the first disk boot index 1 on a disk boot without explicit indexes', () => {
    const argv = buildQemuArgv(baseConfig({ boot: { kind: 'disk' } }));
    expect(argv).toContain('virtio-blk-pci,drive=disk0,id=disk0-dev,bootindex=1');
  });

  it('adds VNC with a VGA device, -S and -incoming defer when asked', () => {
    const argv = buildQemuArgv(
      baseConfig({ vncSocket: '/run/drover/web-1/vnc.sock', startPaused: true, incomingDefer: true }),
    );
    const vnc = argv.indexOf('-vnc');
    expect(argv.slice(vnc, vnc + 4)).toEqual(['-vnc', 'unix:/run/drover/web-1/vnc.sock', '-device', 'VGA']);
    expect(argv.slice(-3)).toEqual(['-S', '-incoming', 'defer']);
  });

  it('escapes commas in every key=value option and leaves plain arguments alone', () => {
    const argv = buildQemuArgv(
      baseConfig({
        name: 'lab,1',
        qmpSocket: '/run/a,b/qmp.sock',
        serialSocket: '/run/a,b/serial.sock',
        serialLog: '/var/log/a,b/serial.log',
        vncSocket: '/run/a,b/vnc.sock',
        pidFile: '/run/a,b/qemu.pid',
        disks: [{ nodeName: 'disk0', path: '/images/x,y.qcow2', format: 'qcow2' }],
        boot: { kind: 'kernel', kernel: '/boot/k,1', cmdline: 'a=1,2' },
      }),
    );
    expect(argv).toContain('guest=lab,,1,debug-threads=on');
    expect(argv).toContain('unix:/run/a,,b/qmp.sock,server=on,wait=off');
    expect(argv).toContain(
      'socket,id=serial0,path=/run/a,,b/serial.sock,server=on,wait=off,logfile=/var/log/a,,b/serial.log,logappend=on',
    );
    expect(argv).toContain('unix:/run/a,,b/vnc.sock');
    expect(argv).toContain('driver=file,filename=/images/x,,y.qcow2,node-name=disk0-file,read-only=off,locking=on');
    // Plain (non key=value) arguments are passed verbatim.
    expect(argv).toContain('/run/a,b/qemu.pid');
    expect(argv).toContain('/boot/k,1');
    expect(argv).toContain('a=1,2');
    expect(findQmpSocket(argv)).toBe('/run/a,b/qmp.sock');
  });

  it('makes the hot-pluggable root ports asked for, in index order, and puts devices with a port on them', () => {
    const argv = buildQemuArgv(
      baseConfig({
        rootPorts: [9, 0, 1, 2, 3, 4, 5, 6, 7, 8],
        disks: [
          { nodeName: 'disk0', path: '/images/root.qcow2', format: 'qcow2', port: 0 },
          { nodeName: 'cd0', path: '/images/seed.iso', format: 'raw', media: 'cdrom' },
        ],
        nics: [{ id: 'net0', mac: '52:54:00:00:00:01', mode: 'user', hostForwards: [], port: 9 }],
      }),
    );
    const ports = argv.filter((arg) => arg.startsWith('pcie-root-port,'));
    expect(ports).toHaveLength(10);
    expect(ports[0]).toBe('pcie-root-port,id=rp0,bus=pcie.0,chassis=1,addr=0x10.0,multifunction=on,io-reserve=0');
    expect(ports[7]).toBe('pcie-root-port,id=rp7,bus=pcie.0,chassis=8,addr=0x10.7,io-reserve=0');
    expect(ports[8]).toBe('pcie-root-port,id=rp8,bus=pcie.0,chassis=9,addr=0x11.0,multifunction=on,io-reserve=0');
    // The ports come before the devices that sit on them.
    expect(argv.indexOf(ports[9]!)).toBeLessThan(argv.indexOf('virtio-blk-pci,drive=disk0,id=disk0-dev,bus=rp0'));
    expect(argv).toContain('ide-cd,drive=cd0,id=cd0-dev,bus=ide.0');
    expect(argv).toContain('virtio-net-pci,netdev=net0,id=net0-dev,mac=52:54:00:00:00:01,romfile=,bus=rp9');
    expect(buildQemuArgv(baseConfig()).some((arg) => arg.startsWith('pcie-root-port'))).toBe(false);
  });

  it('refuses bad input with errors.invalid', () => {
    const cases: Array<[Partial<QemuLaunchConfig>, RegExp]> = [
      [{ qmpSocket: '/run/x\n/qmp.sock' }, /newline or NUL/],
      [{ disks: [{ nodeName: 'd', path: '/img/a\0b', format: 'raw' }] }, /newline or NUL/],
      [{ boot: { kind: 'kernel', kernel: '/k', cmdline: 'quiet\ninit=/bin/sh' } }, /newline or NUL/],
      [{ name: 'evil\nname' }, /newline or NUL/],
      [{ cpus: 0 }, /CPU count 0/],
      [{ cpus: 1.5 }, /CPU count/],
      [{ memoryMiB: 8 }, /memory size 8 MiB/],
      [{ pidFile: 'relative/qemu.pid' }, /absolute path/],
      [{ cpuModel: 'host' }, /needs the kvm accelerator/],
      [{ uuid: 'not-a-uuid' }, /UUID/],
      [{ qmpSocket: `/run/${'x'.repeat(120)}.sock` }, /limited to 107 bytes/],
      [{ disks: [{ nodeName: 'bad,name', path: '/a', format: 'raw' }] }, /disk node name/],
      [
        {
          disks: [
            { nodeName: 'dup', path: '/a', format: 'raw' },
            { nodeName: 'dup', path: '/b', format: 'raw' },
          ],
        },
        /Duplicate device id "dup"/,
      ],
      [{ nics: [{ id: 'n0', mac: '01:00:5e:00:00:01', mode: 'user', hostForwards: [] }] }, /MAC address/],
      [
        { nics: [{ id: 'n0', mac: '52:54:00:00:00:01', mode: 'user', hostForwards: [{ protocol: 'tcp', hostAddress: 'localhost', hostPort: 1, guestPort: 2 }] }] },
        /IPv4/,
      ],
      [
        { nics: [{ id: 'n0', mac: '52:54:00:00:00:01', mode: 'user', hostForwards: [{ protocol: 'tcp', hostAddress: '127.0.0.1', hostPort: 70000, guestPort: 2 }] }] },
        /host port 70000/,
      ],
      [{ boot: { kind: 'cdrom' } }, /no CD-ROM/],
      [{ rootPorts: [64] }, /root port 64: expected an integer from 0 to 63/],
      [{ rootPorts: [1, 1] }, /Root port 1 is listed twice/],
      [{ rootPorts: [0, 1], disks: [{ nodeName: 'd', path: '/a', format: 'raw', port: 2 }] }, /root port 2 for "d": the VM has no such root port/],
      [{ disks: [{ nodeName: 'd', path: '/a', format: 'raw', port: 0 }] }, /no such root port/],
      [
        { rootPorts: [0, 1], disks: [{ nodeName: 'd', path: '/a', format: 'raw', port: 1 }], nics: [{ id: 'n0', mac: '52:54:00:00:00:01', mode: 'user', hostForwards: [], port: 1 }] },
        /Root port 1 is given to two devices/,
      ],
      [{ rootPorts: [0], disks: [{ nodeName: 'cd', path: '/a.iso', format: 'raw', media: 'cdrom', port: 0 }] }, /CD-ROMs are on the AHCI bus/],
      [{ disks: [], boot: { kind: 'disk' } }, /no disk/],
    ];
    for (const [overrides, message] of cases) {
      const error = invalid(baseConfig(overrides));
      expect(error.code).toBe('invalid');
      expect(error.message).toMatch(message);
    }
  });
});

describe('iSCSI disks', () => {
  const lun = { portal: '10.200.1.1:3260', target: 'iqn.2026-11.test.drover:san', lun: 1, initiatorName: 'iqn.2026-11.org.drover:h1.vm' };

  it('opens a LUN with QEMU\'s own initiator (no file, no locking) under the initiator name given', () => {
    const argv = buildQemuArgv(baseConfig({ disks: [{ nodeName: 'disk0', path: 'iscsi://10.200.1.1:3260/iqn.2026-11.test.drover:san/1', iscsi: lun, format: 'raw' }] }));
    const blockdevs = argv.flatMap((arg, i) => (argv[i - 1] === '-blockdev' ? [arg] : []));
    expect(blockdevs[0]).toBe('driver=iscsi,transport=tcp,portal=10.200.1.1:3260,target=iqn.2026-11.test.drover:san,lun=1,initiator-name=iqn.2026-11.org.drover:h1.vm,node-name=disk0-file,read-only=off');
    expect(blockdevs[1]).toBe('driver=raw,file=disk0-file,node-name=disk0,read-only=off');
  });

  it('refuses a bad portal, target, initiator name or LUN with errors.invalid', () => {
    const cases: Array<[Partial<typeof lun>, RegExp]> = [
      [{ portal: '10.200.1.1' }, /portal/],
      [{ portal: 'a b:3260' }, /portal/],
      [{ target: 'san' }, /target/],
      [{ target: 'iqn.2026-11.x,driver=file' }, /target/],
      [{ initiatorName: 'nobody' }, /initiator/],
      [{ lun: -1 }, /LUN/],
      [{ lun: 1.5 }, /LUN/],
    ];
    for (const [change, message] of cases) {
      const error = invalid(baseConfig({ disks: [{ nodeName: 'disk0', path: 'iscsi://x', iscsi: { ...lun, ...change }, format: 'raw' }] }));
      expect(error.code).toBe('invalid');
      expect(error.message).toMatch(message);
    }
  });
});

describe('escapeOptionValue and splitOptionString', () => {
  it('double commas and split them back', () => {
    expect(escapeOptionValue('/srv/a,b,,c')).toBe('/srv/a,,b,,,,c');
    const joined = [escapeOptionValue('/srv/a,b'), 'server=on', escapeOptionValue('x,y,')].join(',');
    expect(splitOptionString(joined)).toEqual(['/srv/a,b', 'server=on', 'x,y,']);
    expect(splitOptionString('plain')).toEqual(['plain']);
  });

  it('finds no QMP socket when there is none', () => {
    expect(findQmpSocket(['qemu-system-x86_64', '-qmp', 'tcp:127.0.0.1:4444'])).toBeUndefined();
    expect(findQmpSocket(['qemu-system-x86_64'])).toBeUndefined();
  });
});
