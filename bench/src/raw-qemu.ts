import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { buildQemuArgv, killProcess, QmpClient, waitForExit, type Accelerator, type QemuLaunchConfig } from '@drover/qemu';

/**
 * QEMU driven by hand, the baseline of the start benchmarks (the approach of
 * agent-bench.ts): spawn it (root, no sandbox), poll for the QMP socket, then
 * query-status until it says running.
 */
export async function rawQemuStart(config: QemuLaunchConfig, pids: number[]): Promise<{ pid: number; qmp: QmpClient }> {
  await rm(config.qmpSocket, { force: true });
  const argv = buildQemuArgv(config);
  const child = spawn(argv[0]!, argv.slice(1), { stdio: 'ignore', detached: true });
  child.unref();
  pids.push(child.pid!);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`raw QEMU exited with ${child.exitCode}`);
    if (existsSync(config.qmpSocket)) {
      try {
        const qmp = await QmpClient.connect(config.qmpSocket, { timeoutMs: 10_000 });
        if (!config.incomingDefer) {
          while (!(await qmp.queryStatus()).running) await new Promise((r) => setTimeout(r, 1));
        }
        return { pid: child.pid!, qmp };
      } catch {
        /* not listening yet */
      }
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Where the agent put its devices: the PCIe root ports of its QEMU (for hotplug)
 * and the ports its first disk and NIC sit on. Read from a running agent QEMU
 * (`qemuShapeOf`), so the raw guest has the same devices whatever the agent gives.
 */
export interface DeviceLayout {
  rootPorts: number[];
  diskPort?: number;
  nicPort?: number;
}

/**
 * The raw guest of the start benchmarks: the counter appliance booted directly
 * (kernel + initrd) from the given disks, 128 MiB, with the same devices the
 * agent gives its VMs (`layout`: its root ports, read from its QEMU), and every
 * socket in `work`.
 */
export function rawCounterConfig(options: {
  work: string;
  kernel: string;
  initrd: string;
  cmdline: string;
  disks: QemuLaunchConfig['disks'];
  accel: Accelerator;
  cpuModel: string;
  uuid: string;
  mac: string;
  layout?: DeviceLayout;
}): QemuLaunchConfig {
  const { work, layout } = options;
  const disks = options.disks.map((disk, index) => (index === 0 && layout?.diskPort !== undefined ? { ...disk, port: layout.diskPort } : disk));
  return {
    name: 'raw-counter',
    uuid: options.uuid,
    accel: options.accel,
    cpus: 1,
    memoryMiB: 128,
    cpuModel: options.cpuModel,
    disks,
    nics: [{ id: 'net0', mac: options.mac, mode: 'user', hostForwards: [], ...(layout?.nicPort !== undefined ? { port: layout.nicPort } : {}) }],
    ...(layout?.rootPorts.length ? { rootPorts: layout.rootPorts } : {}),
    boot: { kind: 'kernel', kernel: options.kernel, initrd: options.initrd, cmdline: `${options.cmdline} drover.name=raw drover.net=user` },
    qmpSocket: path.join(work, 'qmp.sock'),
    serialSocket: path.join(work, 'serial.sock'),
    serialLog: path.join(work, 'serial.log'),
    vncSocket: path.join(work, 'vnc.sock'),
    pidFile: path.join(work, 'qemu.pid'),
  };
}

/** QMP quit, then SIGKILL if it has not gone within 5 s. */
export async function rawQemuKill(pid: number, qmp: QmpClient): Promise<void> {
  await qmp.quit().catch(() => undefined);
  if (!(await waitForExit(pid, 5_000))) await killProcess(pid, 'SIGKILL');
}

/** The accelerator, CPU model and device layout a running QEMU was given, read from its command line. */
export function qemuShapeOf(pid: number): { accel: Accelerator; cpuModel: string; layout: DeviceLayout } | undefined {
  let argv: string[];
  try {
    argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
  } catch {
    return undefined;
  }
  const after = (flag: string) => {
    const at = argv.indexOf(flag);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const accel = after('-accel')?.split(',')[0];
  const cpuModel = after('-cpu');
  if ((accel !== 'kvm' && accel !== 'tcg') || !cpuModel) return undefined;
  const devices = argv.filter((_, i) => argv[i - 1] === '-device');
  const rootPorts = devices.flatMap((d) => (d.startsWith('pcie-root-port,') ? [Number(/(?:^|,)id=rp(\d+)(?:,|$)/.exec(d)?.[1])] : [])).filter(Number.isInteger);
  const portOf = (id: string) => {
    const bus = /(?:^|,)bus=rp(\d+)(?:,|$)/.exec(devices.find((d) => d.includes(`,id=${id},`) || d.endsWith(`,id=${id}`)) ?? '')?.[1];
    return bus === undefined ? undefined : Number(bus);
  };
  const diskPort = portOf('disk0-dev');
  const nicPort = portOf('net0-dev');
  return { accel, cpuModel, layout: { rootPorts, ...(diskPort !== undefined ? { diskPort } : {}), ...(nicPort !== undefined ? { nicPort } : {}) } };
}
