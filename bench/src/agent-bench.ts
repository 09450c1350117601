import { existsSync, readFileSync } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { buildAppliance, defaultApplianceCacheDir } from '@drover/appliances';
import {
  defineApplianceVm,
  importAppliance,
  startTestAgent,
  tempDir,
  type AgentClient,
  type TestAgent,
} from '@drover/agent/testing';
import { killProcess, QemuImg, type QemuLaunchConfig } from '@drover/qemu';
import { qemuShapeOf, rawCounterConfig, rawQemuKill, rawQemuStart } from './raw-qemu.js';
import { median, now, report, timed } from './stats.js';

/**
 * Issue 2's benchmark: the agent against raw QEMU driven by hand, in one run.
 *  - start: agent "start VM" call → QMP says running, vs raw spawn → QMP says running (target ≤ 1.5×)
 *  - save and restore through the agent vs raw QMP `migrate exec:cat` (target ≤ 1.2×)
 *  - thin clone through the agent API vs raw `qemu-img create -b`
 * The guest is the same in both: the counter appliance, 128 MiB, same kernel, initrd and disk.
 */
export async function runAgentBench(options: { smoke: boolean }): Promise<boolean> {
  const rounds = options.smoke ? 1 : 10;
  const saveRounds = options.smoke ? 1 : 5;
  const work = tempDir('bench');
  let agent: TestAgent | undefined;
  let fastAgent: TestAgent | undefined;
  const rawPids: number[] = [];
  try {
    agent = await startTestAgent();
    const client = agent.client;
    const appliance = await importAppliance(client, 'counter');
    const artifacts = await buildAppliance('counter', { cacheDir: defaultApplianceCacheDir() });
    const accel = ((await client.ok('GET', '/v1/host')) as { accel: 'kvm' | 'tcg' }).accel;
    const id = await defineApplianceVm(client, appliance, 'bench-counter', { memoryMiB: 128 });

    // The raw guest: the same appliance on its own thin clone, same devices (the agent's
    // layout of PCIe root ports, read from its QEMU started once here).
    const first = await client.action(id, 'start');
    const layout = first.pid === undefined ? undefined : qemuShapeOf(first.pid)?.layout;
    await client.action(id, 'force-off');
    const rawDisk = path.join(work, 'raw.root.qcow2');
    await QemuImg.createThinClone(artifacts.rootDisk, 'qcow2', rawDisk);
    const rawConfig = (extra: Partial<QemuLaunchConfig> = {}): QemuLaunchConfig => ({
      ...rawCounterConfig({
        work,
        kernel: artifacts.kernel,
        initrd: artifacts.initrd,
        cmdline: artifacts.cmdline,
        disks: [{ nodeName: 'disk0', path: rawDisk, format: 'qcow2' }],
        accel,
        cpuModel: 'qemu64',
        uuid: '00000000-0000-4000-8000-000000000001',
        mac: '52:54:00:aa:bb:01',
        ...(layout ? { layout } : {}),
      }),
      ...extra,
    });

    const rawStart = (extra: Partial<QemuLaunchConfig> = {}) => rawQemuStart(rawConfig(extra), rawPids);
    const rawKill = rawQemuKill;

    // ---- start: alternate the two so machine noise hits both alike
    const agentStarts: number[] = [];
    const rawStarts: number[] = [];
    for (let i = 0; i < rounds; i++) {
      const raw = await timed(() => rawStart());
      rawStarts.push(raw.ms);
      await rawKill(raw.value.pid, raw.value.qmp);
      const viaAgent = await timed(() => client.action(id, 'start'));
      if (viaAgent.value.state !== 'running') throw new Error(`agent start ended in state ${viaAgent.value.state}`);
      agentStarts.push(viaAgent.ms);
      await client.action(id, 'force-off');
    }
    process.stdout.write(`\nagent benchmark (${accel}, counter appliance, 128 MiB, ${rounds} rounds)\n`);
    const startOk = report({ name: 'start → QMP running (median)', figure: median(agentStarts), baseline: median(rawStarts), baselineName: 'raw spawn', unit: 'ms', maxRatio: 1.5 });

    // ---- save and restore of a booted guest: durable (fdatasync before "saved") and not
    const raw = await rawStart();
    const rawSerial = rawConfig().serialLog;
    for (const deadline = now() + 120_000; ; ) {
      const text = existsSync(rawSerial) ? readFileSync(rawSerial, 'utf8') : '';
      if (text.includes('DROVER-READY')) break;
      if (now() > deadline) throw new Error('raw guest did not boot');
      await new Promise((r) => setTimeout(r, 100));
    }
    let rawPid = raw.pid;
    let rawQmp = raw.qmp;
    const stateFile = path.join(work, 'raw.state');

    const saveRestore = async (agentClient: AgentClient, vm: string, durable: boolean): Promise<boolean> => {
      await agentClient.action(vm, 'start');
      await agentClient.waitForSerial(vm, /DROVER-READY/);
      const agentSaves: number[] = [];
      const agentRestores: number[] = [];
      const rawSaves: number[] = [];
      const rawRestores: number[] = [];
      for (let i = 0; i < saveRounds; i++) {
        agentSaves.push((await timed(() => agentClient.action(vm, 'save'))).ms);
        agentRestores.push((await timed(() => agentClient.action(vm, 'restore'))).ms);
        const save = await timed(async () => {
          await rawQmp.stop();
          await rawQmp.migrateSetCapabilities([{ capability: 'events', state: true }]);
          await rawQmp.migrateSetParameters({ 'max-bandwidth': 64 * 1024 ** 3 });
          const done = rawQmp.waitForEvent('MIGRATION', (data) => (data as { status?: string }).status === 'completed', 60_000);
          await rawQmp.migrate(durable ? `exec:dd of=${stateFile} bs=4M conv=fdatasync status=none` : `exec:cat > ${stateFile}`);
          await done;
          await rawKill(rawPid, rawQmp);
        });
        rawSaves.push(save.ms);
        const restore = await timed(async () => {
          const fresh = await rawStart({ incomingDefer: true });
          await fresh.qmp.migrateSetCapabilities([{ capability: 'events', state: true }]);
          const done = fresh.qmp.waitForEvent('MIGRATION', (data) => (data as { status?: string }).status === 'completed', 60_000);
          await fresh.qmp.migrateIncoming(`exec:cat ${stateFile}`);
          await done;
          await fresh.qmp.cont();
          return fresh;
        });
        rawRestores.push(restore.ms);
        rawPid = restore.value.pid;
        rawQmp = restore.value.qmp;
      }
      const bytes = (await stat(stateFile)).size;
      const kind = durable ? 'durable' : 'not synced';
      process.stdout.write(`save/restore (${kind}): state ${(bytes / 1024 / 1024).toFixed(1)} MiB, ${saveRounds} rounds\n`);
      const saveOk = report({ name: `save, ${kind} (median)`, figure: median(agentSaves), baseline: median(rawSaves), baselineName: durable ? 'raw exec:dd fdatasync' : 'raw exec:cat', unit: 'ms', maxRatio: 1.2 });
      const restoreOk = report({ name: `restore, ${kind} (median)`, figure: median(agentRestores), baseline: median(rawRestores), baselineName: 'raw exec:cat', unit: 'ms', maxRatio: 1.2 });
      await agentClient.action(vm, 'force-off');
      return saveOk && restoreOk;
    };
    const durableOk = await saveRestore(client, id, true);
    fastAgent = await startTestAgent({ durableSaves: false });
    const fastAppliance = await importAppliance(fastAgent.client, 'counter');
    const fastId = await defineApplianceVm(fastAgent.client, fastAppliance, 'bench-counter', { memoryMiB: 128 });
    const fastOk = await saveRestore(fastAgent.client, fastId, false);
    await rawKill(rawPid, rawQmp);

    // ---- thin clones of a 1 GiB base
    await client.createVolume('default', { name: 'bench-base.qcow2', sizeBytes: 1024 ** 3 });
    const rawBase = path.join(work, 'base.qcow2');
    await QemuImg.create(rawBase, 'qcow2', 1024 ** 3);
    const agentClones: number[] = [];
    const rawClones: number[] = [];
    await mkdir(path.join(work, 'clones'), { recursive: true });
    for (let i = 0; i < rounds; i++) {
      agentClones.push((await timed(() => client.createVolume('default', { name: `bench-clone-${i}.qcow2`, cloneOf: 'bench-base.qcow2' }))).ms);
      const { execFile } = await import('node:child_process');
      rawClones.push(
        (
          await timed(
            () =>
              new Promise<void>((resolve, reject) =>
                execFile('qemu-img', ['create', '-q', '-f', 'qcow2', '-F', 'qcow2', '-b', rawBase, path.join(work, 'clones', `c${i}.qcow2`)], (e) => (e ? reject(e) : resolve())),
              ),
          )
        ).ms,
      );
    }
    report({ name: 'thin clone of 1 GiB base (median)', figure: median(agentClones), baseline: median(rawClones), baselineName: 'raw qemu-img create -b', unit: 'ms' });
    const all = startOk && durableOk && fastOk;
    process.stdout.write(`agent benchmark targets: ${all ? 'all met' : 'NOT all met'}\n`);
    return all;
  } finally {
    for (const pid of rawPids) {
      await killProcess(pid, 'SIGKILL').catch(() => undefined);
    }
    await agent?.dispose();
    await fastAgent?.dispose();
    await rm(work, { recursive: true, force: true });
  }
}

