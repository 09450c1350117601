/* eslint-disable @typescript-eslint/no-explicit-any -- loosely typed JSON answers of the API and agents, read field by field */
import { spawn } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { qemuDhParamsPem } from '@drover/agent';
import { tempDir, TestNetwork } from '@drover/agent/testing';
import { buildAppliance, defaultApplianceCacheDir } from '@drover/appliances';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { downtimeLimitForPass, migrationMultifdChannels } from '@drover/api';
import { buildQemuArgv, killProcess, QemuImg, QmpClient, waitForExit, type QmpEvent, type QemuLaunchConfig } from '@drover/qemu';
import { qemuShapeOf, rawCounterConfig } from './raw-qemu.js';
import { bootstrapInterval, journalPhases, median, medianInterval, medianPhases, now, ratioInterval, report } from './stats.js';

/**
 * Live migration through Drover vs the same migration driven by raw QMP, with
 * the same settings (TLS with the same cluster certificates, multifd over 2 channels, return-path,
 * pause-before-switchover, auto-converge, 1 GiB/s, and the downtime steps:
 * downtime-limit 30 ms first, doubled per pass that does not converge, up to 300 ms),
 * between two hosts in network namespaces, of 256 MiB counter guests: idle,
 * and dirtying memory (`drover.dirty_mib`). The disk is on a pool both hosts
 * share, so only memory moves. Both sides copy live, under TCG too: both QEMUs
 * get their command line from `buildQemuArgv`, hence the same RAM size (8 KiB
 * short of 256 MiB under TCG, which QEMU 7.2 copies live without losing pages;
 * docs/migration.md, "TCG hosts"), and neither pauses the guest for the copy.
 *
 *  - total time: Drover's `POST /vms/:id/migrate?wait=true` (begin, destination
 *    QEMU, migration, finish, source ended) vs raw: spawn the destination
 *    QEMU, the QMP sequence, `cont` there, the figures, `quit` the source. Target ≤ 1.15×.
 *  - downtime: QEMU's own figure; target ≤ 50 ms for the idle guest.
 *  - where the time goes: Drover's parts from its operation journal (the request until
 *    the operation exists, each phase, the answer), the raw side's parts timed around its
 *    QMP steps; medians.
 *
 * Rounds: 30 of each side per kind (DROVER_BENCH_MIGRATION_ROUNDS) over 10 pairs of guests booted
 * anew (DROVER_BENCH_MIGRATION_PAIRS: a guest's copy speed holds for all its rounds); single rounds
 * spread by ±30 %, so each figure is printed with its 90 % bootstrap interval (stats.ts).
 *
 * Fairness: the rounds alternate (Drover, raw, Drover, raw…: a drift of the machine hits
 * both), the guest not being moved is paused meanwhile, the raw QEMU gets the agent's
 * device layout (PCIe root ports, NIC) read from its command line, its seccomp sandbox and
 * its account (uid, gid: root's raw QEMU copied faster), both sides read QEMU's figures
 * (`query-migrate`) before the source quits, and both sides' TLS
 * servers get the same DH group (`qemuDhParamsPem`: without it QEMU generates one at every
 * server object-add, 0.2–1 s). docs/migration.md ("Benchmark") has the figures.
 */
export async function runMigrationBench(options: { smoke: boolean }): Promise<boolean> {
  // Single rounds spread by ±30 % on 2 cores under TCG: 30 rounds a side, and each figure's 90 % interval is printed (about ±0.1× for the ratio).
  const rounds = options.smoke ? 1 : Number(process.env.DROVER_BENCH_MIGRATION_ROUNDS ?? 30);
  // Over this many pairs of guests (DROVER_BENCH_MIGRATION_PAIRS), each booted anew: 10 × 3 rounds by default. Two guests
  // send the same bytes but copy at speeds up to 40 % apart for all their rounds: more pairs average that out.
  const pairs = options.smoke ? 1 : Math.max(1, Number(process.env.DROVER_BENCH_MIGRATION_PAIRS ?? 10));
  const roundsPerPair = Math.max(1, Math.ceil(rounds / pairs));
  // The longest pause allowed on both sides, up to which the downtime steps go (the product's default is 300 ms; DROVER_BENCH_DOWNTIME_LIMIT_MS to measure others).
  const downtimeLimitMs = Number(process.env.DROVER_BENCH_DOWNTIME_LIMIT_MS ?? 300);
  // After a guest is resumed, before its round: its dirtying is steady again.
  const settleMs = 1000;
  // DROVER_BENCH_MIGRATION_KINDS=idle (or dirty) runs one kind only.
  const only = process.env.DROVER_BENCH_MIGRATION_KINDS?.split(',');
  const all: Array<[string, string]> = options.smoke ? [['idle', '']] : [['idle', ''], ['dirty 32 MiB/s', 'drover.dirty_mib=32']];
  const kinds = all.filter(([kind]) => !only || only.includes(kind.split(' ')[0]!));
  const network = await TestNetwork.create(2);
  const dataDir = tempDir('bench-mig');
  const shared = tempDir('bench-mig-shared');
  const work = tempDir('bench-mig-raw');
  const rawPids: number[] = [];
  let manager: RunningManager | undefined;
  let met = true;
  try {
    // The product's heartbeat (every 5 s: facts, a store write and a reconcile per host), not a test's faster one: it runs on the cores the copy needs.
    manager = await startManager({ ...defaultManagerConfig(dataDir), listen: '127.0.0.1:0', tlsListen: `${network.gateway}:0`, applianceCacheDir: defaultApplianceCacheDir(), logLevel: 'error' });
    const m = manager;
    const api = async <T = any>(method: string, route: string, body?: unknown): Promise<T> => {
      const response = await fetch(`${m.url}${route}`, {
        method,
        headers: { authorization: `Bearer ${m.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
        ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      });
      const answer = (await response.json()) as T;
      if (response.status >= 400) throw new Error(`${method} ${route}: ${response.status} ${JSON.stringify(answer)}`);
      return answer;
    };
    const stateDirs: string[] = [];
    for (const host of network.hosts) {
      const join = await api<{ token: string; caFingerprint: string }>('POST', '/api/v1/hosts/join-tokens', {});
      const { stateDir } = await network.startAgent(host, {
        managerUrl: m.tlsUrl!,
        joinToken: join.token,
        caFingerprint: join.caFingerprint,
        capacity: { cpus: 2, memoryMiB: 2048 },
        config: { pools: [{ name: 'default', path: shared, shared: true }], accel: 'tcg' },
      });
      stateDirs.push(stateDir);
    }
    for (const deadline = Date.now() + 60_000; ; ) {
      const hosts = await api<{ items: Array<{ state: string }> }>('GET', '/api/v1/hosts');
      if (hosts.items.length === 2 && hosts.items.every((h) => h.state === 'online')) break;
      if (Date.now() > deadline) throw new Error('hosts did not come online');
      await new Promise((r) => setTimeout(r, 100));
    }
    const counter = await buildAppliance('counter', { cacheDir: defaultApplianceCacheDir() });

    for (const [kind, cmdline] of kinds) {
      const short = kind.split(' ')[0]!;
      // Both guests of this kind run side by side; each round migrates one of them, Drover and raw QMP
      // alternating (D, R, D, R…) so that a drift of the machine hits both. The guest that is not being
      // migrated is paused meanwhile (a dirtying guest would take a core from the other's migration).
      // The rounds are spread over `pairs` pairs of guests, each booted anew: a guest's copy speed holds
      // for all its rounds (its memory, its dirtying), so rounds over one pair do not average it out.
      const droverTotal: number[] = [];
      const droverDowntime: number[] = [];
      const droverPhases: Array<Record<string, number>> = [];
      const rawTotal: number[] = [];
      const rawDowntime: number[] = [];
      const rawPhases: Array<Record<string, number>> = [];
      // QEMU's own figures of each round (its total-time: from migrate until completed, the copy and the
      // switchover; the bytes it sent): what moves a run is the copy, and these show whose copy it was.
      const droverCopy: Array<{ ms: number; bytes: number }> = [];
      const rawCopy: Array<{ ms: number; bytes: number }> = [];
      const perPair: string[] = [];
      const copyPerPair: string[] = [];
      for (let pair = 0; pair < pairs; pair++) {
        const firstRound = droverTotal.length;
        // ---------------------------------------------------------------- Drover's guest
        const vm = await api<{ id: string }>('POST', '/api/v1/vms', { name: `bench-${short}-${pair + 1}`, image: 'counter', memoryMiB: 256, hostInclude: ['h1'], ...(cmdline ? { cmdline } : {}) });
        const startOp = await api<{ result?: { pid?: number } }>('POST', `/api/v1/vms/${vm.id}/start?wait=true`, {});
        // The raw side builds the same machine as the agent's QEMU: its PCIe root ports (their device state
        // moves at the switchover too) and a NIC only if the agent's QEMU has one.
        const shape = startOp.result?.pid ? qemuShapeOf(startOp.result.pid) : undefined;
        if (!shape) throw new Error(`cannot read the device layout of the agent's QEMU (${JSON.stringify(startOp.result)})`);
        const agentArgv = readFileSync(`/proc/${startOp.result!.pid!}/cmdline`, 'utf8').split('\0');
        const agentHasNic = agentArgv.includes('-netdev');
        const agentSandboxed = agentArgv.includes('-sandbox');
        // The account the agent's QEMU runs as (the agent's `drover` user): the raw QEMU runs as it too.
        const account = accountOf(startOp.result!.pid!);
        if (pair === 0) process.stdout.write(`  ${kind}: the agent's QEMU has ${shape.layout.rootPorts.length} PCIe root port(s), ${agentHasNic ? 'a NIC' : 'no NIC'}, ${shape.accel}, ${shape.cpuModel}${agentSandboxed ? ', the seccomp sandbox' : ''}, uid ${account.uid}: the raw side gets the same\n`);
        await waitFor(async () => (await fetch(`${m.url}/api/v1/vms/${vm.id}/console/serial/log`, { headers: { authorization: `Bearer ${m.adminToken}` } }).then((r) => r.text())).includes('DROVER-COUNTER'), 180_000);
        await api('POST', `/api/v1/vms/${vm.id}/pause?wait=true`, {});

        // ---------------------------------------------------------------- raw QMP's guest
        const tls = network.hosts.map((_, index) => tlsDir(path.join(work, `tls-${index}`), stateDirs[index]!));
        const disk = path.join(shared, `raw-${short}-${pair + 1}.qcow2`);
        rmSync(disk, { force: true });
        await QemuImg.createThinClone(counter.rootDisk, 'qcow2', disk, { relativeBacking: false });
        chownTree(work, account);
        chownSync(disk, account.uid, account.gid);
        const uuid = randomUUID();
        const configOf = (index: number, incoming: boolean): QemuLaunchConfig => {
          const dir = path.join(work, `${short}-${pair + 1}-${index}`);
          mkdirSync(dir, { recursive: true });
          chownSync(dir, account.uid, account.gid);
          const config = rawCounterConfig({ work: dir, kernel: counter.kernel, initrd: counter.initrd, cmdline: `${counter.cmdline} ${cmdline}`, disks: [{ nodeName: 'disk0', path: disk, format: 'qcow2' }], accel: shape.accel, cpuModel: shape.cpuModel, uuid, mac: '52:54:00:12:34:56', layout: shape.layout });
          return {
            ...config,
            ...(agentHasNic ? {} : { nics: [] }),
            // The agent's QEMU runs under QEMU's seccomp sandbox: so does this one (the same process, but for its user).
            ...(agentSandboxed ? { sandbox: true } : {}),
            memoryMiB: 256,
            ...(incoming ? { startPaused: true, incomingDefer: true } : {}),
          };
        };
        let current = await rawStart(network.hosts[0]!.namespace, configOf(0, false), rawPids, account);
        await waitFor(async () => existsSync(configOf(0, false).serialLog) && readFileSync(configOf(0, false).serialLog, 'utf8').includes('DROVER-COUNTER'), 180_000);
        await current.qmp.stop();
        let at = 0;

        for (let round = 0; round < roundsPerPair; round++) {
          // ------------------------------------------------------------ a Drover round
          await api('POST', `/api/v1/vms/${vm.id}/resume?wait=true`, {});
          await new Promise((r) => setTimeout(r, settleMs));
          const to = round % 2 === 0 ? 'h2' : 'h1';
          const started = now();
          const wallStarted = Date.now();
          const op = await api<{ id: string; state: string; result: { qemuDowntimeMs: number; totalTimeMs?: number; transferredBytes?: number }; error: unknown }>('POST', `/api/v1/vms/${vm.id}/migrate?wait=true`, { to, ...(downtimeLimitMs !== 300 ? { downtimeMs: downtimeLimitMs } : {}) });
          if (op.state !== 'done') throw new Error(`Drover migration ended ${op.state}: ${JSON.stringify(op.error)}`);
          droverTotal.push(now() - started);
          droverPhases.push(journalPhases(await m.store.operations.get(op.id), wallStarted, Date.now()));
          droverDowntime.push(op.result.qemuDowntimeMs);
          droverCopy.push({ ms: op.result.totalTimeMs ?? Number.NaN, bytes: op.result.transferredBytes ?? Number.NaN });
          await api('POST', `/api/v1/vms/${vm.id}/pause?wait=true`, {});

          // ------------------------------------------------------------ a raw QMP round
          await current.qmp.cont();
          await new Promise((r) => setTimeout(r, settleMs));
          const next = 1 - at;
          const rawStarted = now();
          const mark = phaseClock(rawStarted);
          const dest = await rawStart(network.hosts[next]!.namespace, configOf(next, true), rawPids, account);
          mark('spawn destination');
          const address = network.hosts[next]!.address;
          const port = 49152 + Math.floor(Math.random() * 10000);
          await dest.qmp.execute('object-add', { 'qom-type': 'tls-creds-x509', id: 'tls0', dir: tls[next], endpoint: 'server', 'verify-peer': true });
          await dest.qmp.execute('object-add', { 'qom-type': 'authz-simple', id: 'authz0', identity: `CN=${network.hosts[at]!.name}` });
          mark('destination TLS');
          await dest.qmp.migrateSetCapabilities({ events: true, 'return-path': true, 'late-block-activate': true, multifd: true });
          await dest.qmp.migrateSetParameters({ 'tls-creds': 'tls0', 'tls-authz': 'authz0', 'multifd-channels': migrationMultifdChannels });
          await dest.qmp.migrateIncoming(`tcp:${address}:${port}`);
          mark('destination settings and listen');
          const src = current.qmp;
          await src.execute('object-del', { id: 'tls0' }).catch(() => undefined);
          await src.execute('object-add', { 'qom-type': 'tls-creds-x509', id: 'tls0', dir: tls[at], endpoint: 'client', 'verify-peer': true });
          mark('source TLS');
          await src.migrateSetCapabilities({ events: true, 'return-path': true, 'pause-before-switchover': true, 'auto-converge': true, multifd: true });
          // The same downtime steps as Drover's agent: a short limit first, raised at each pass that does not converge.
          let limitSet = downtimeLimitForPass(downtimeLimitMs, 0);
          await src.migrateSetParameters({ 'downtime-limit': limitSet, 'max-bandwidth': 1024 ** 3, 'tls-creds': 'tls0', 'tls-hostname': address, 'multifd-channels': migrationMultifdChannels });
          const onPass = (event: QmpEvent) => {
            if (event.event !== 'MIGRATION_PASS') return;
            const wanted = downtimeLimitForPass(downtimeLimitMs, Number(event.data.pass));
            if (wanted === limitSet) return;
            limitSet = wanted;
            src.migrateSetParameters({ 'downtime-limit': wanted }).catch(() => undefined);
          };
          src.on('event', onPass);
          const preSwitchover = src.waitForEvent('MIGRATION', (d) => d.status === 'pre-switchover' || d.status === 'failed', 600_000);
          const completed = dest.qmp.waitForEvent('MIGRATION', (d) => d.status === 'completed' || d.status === 'failed', 600_000);
          mark('source settings');
          await src.migrate(`tcp:${address}:${port}`);
          if ((await preSwitchover).data.status !== 'pre-switchover') throw new Error('raw migration failed');
          src.off('event', onPass);
          mark('copy to pre-switchover');
          await src.migrateContinue('pre-switchover');
          if ((await completed).data.status !== 'completed') throw new Error('raw migration failed on the destination');
          await dest.qmp.cont();
          mark('switchover and cont');
          // QEMU's figures (downtime, total-time), read from the source before it quits, as Drover's `confirm`
          // reads them for its result: counted on both sides.
          const info = await src.queryMigrate();
          mark('figures');
          await src.quit().catch(() => undefined);
          if (!(await waitForExit(current.pid, 5_000))) await killProcess(current.pid, 'SIGKILL');
          rawTotal.push(now() - rawStarted);
          rawPhases.push({ ...mark.phases, 'quit source': now() - rawStarted - Object.values(mark.phases).reduce((a, b) => a + b, 0) });
          rawDowntime.push(typeof info.downtime === 'number' ? info.downtime : Number.NaN);
          rawCopy.push({ ms: info['total-time'] ?? Number.NaN, bytes: info.ram?.transferred ?? Number.NaN });
          current = dest;
          at = next;
          await current.qmp.stop();
        }
        await api('POST', `/api/v1/vms/${vm.id}/force-off?wait=true`, {});
        await current.qmp.quit().catch(() => undefined);
        await waitForExit(current.pid, 5_000);
        rmSync(disk, { force: true });
        const pairDrover = median(droverTotal.slice(firstRound));
        const pairRaw = median(rawTotal.slice(firstRound));
        perPair.push(`${pairDrover.toFixed(0)} vs ${pairRaw.toFixed(0)} (${(pairDrover / pairRaw).toFixed(2)}×)`);
        copyPerPair.push(`${copyFigures(droverCopy.slice(firstRound))} vs ${copyFigures(rawCopy.slice(firstRound))}`);
      }
      process.stdout.write(`  ${kind}: ${pairs} pair(s) of guests, ${roundsPerPair} round(s) a side each; each pair's medians (ms): ${perPair.join(', ')}\n`);
      process.stdout.write(`  ${kind}: QEMU's own copy (its total-time, MiB sent; medians), Drover vs raw, per pair: ${copyPerPair.join('; ')}\n`);
      // Each side's total beyond its pre-copy (QEMU's total-time less its downtime: from `migrate` until the
      // guest stops, QEMU's work alone on both sides), the downtime with Drover's pause at pre-switchover
      // included: the part the copy's spread does not move. With raw's median total, the ratio Drover's
      // own steps alone give (for reading the run: the target is judged on the totals above).
      const beyond = (totals: number[], copies: Array<{ ms: number }>, downtimes: number[]) => totals.map((total, i) => total - (copies[i]!.ms - downtimes[i]!));
      const droverBeyond = beyond(droverTotal, droverCopy, droverDowntime);
      const rawBeyond = beyond(rawTotal, rawCopy, rawDowntime);
      // Raw's rounds are drawn as wholes (its total and its part beyond the pre-copy belong together).
      const equalCopies = ([d, rawRounds]: number[][]) => {
        const rt = rawRounds!.map((i) => rawTotal[i]!);
        return (median(rt) + median(d!.filter(Number.isFinite)) - median(rawRounds!.map((i) => rawBeyond[i]!).filter(Number.isFinite))) / median(rt);
      };
      const rawRounds = rawTotal.map((_, i) => i);
      const [low, high] = rounds > 1 ? bootstrapInterval([droverBeyond, rawRounds], equalCopies) : [0, 0];
      process.stdout.write(
        `  ${kind}: beyond the pre-copy (medians): Drover ${median(droverBeyond.filter(Number.isFinite)).toFixed(0)} ms, raw ${median(rawBeyond.filter(Number.isFinite)).toFixed(0)} ms: with equal pre-copies Drover would be ${equalCopies([droverBeyond, rawRounds]).toFixed(2)}×${rounds > 1 ? ` (90%: ${low.toFixed(2)}–${high.toFixed(2)}×)` : ''} raw's total\n`,
      );
      met =
        report({
          name: `migrate ${kind} 256 MiB: total`,
          figure: median(droverTotal),
          baseline: median(rawTotal),
          baselineName: 'raw QMP',
          unit: 'ms',
          maxRatio: 1.15,
          ...(rounds > 1 ? { ratioInterval: ratioInterval(droverTotal, rawTotal) } : {}),
        }) && met;
      const downtimeOk = report({
        name: `migrate ${kind} 256 MiB: downtime`,
        figure: median(droverDowntime),
        baseline: median(rawDowntime.filter(Number.isFinite)),
        baselineName: 'raw QMP',
        unit: 'ms',
        ...(kind === 'idle' ? { atMost: 50 } : {}),
        ...(rounds > 1 ? { figureInterval: medianInterval(droverDowntime) } : {}),
      });
      met = downtimeOk && met;
      const list = (values: number[]) => values.map((v) => v.toFixed(0)).join(' ');
      process.stdout.write(`  rounds (ms), Drover total: ${list(droverTotal)}; raw total: ${list(rawTotal)}; Drover downtime: ${list(droverDowntime)}; raw downtime: ${list(rawDowntime)}\n`);
      process.stdout.write(`  where the time goes, Drover (journal, median ms): ${medianPhases(droverPhases)}\n`);
      process.stdout.write(`  where the time goes, raw QMP (median ms): ${medianPhases(rawPhases)}\n`);
    }
  } finally {
    for (const pid of rawPids) await killProcess(pid, 'SIGKILL').catch(() => undefined);
    await manager?.close().catch(() => undefined);
    await network.destroy();
    for (const dir of [dataDir, shared, work]) rmSync(dir, { recursive: true, force: true });
  }
  process.stdout.write(`migration benchmark targets: ${met ? 'all met' : 'NOT all met'}\n`);
  return met;
}

/** A side's QEMU copy figures over some rounds: `total-time median ms / MiB sent median`. */
function copyFigures(rounds: Array<{ ms: number; bytes: number }>): string {
  return `${median(rounds.map((r) => r.ms)).toFixed(0)} ms / ${(median(rounds.map((r) => r.bytes)) / 1024 ** 2).toFixed(1)} MiB`;
}

/** Marks consecutive parts of a raw migration: each call names the part that just ended. */
function phaseClock(started: number): ((name: string) => void) & { phases: Record<string, number> } {
  let last = started;
  const mark = Object.assign(
    (name: string) => {
      const t = now();
      mark.phases[name] = t - last;
      last = t;
    },
    { phases: {} as Record<string, number> },
  );
  return mark;
}

async function waitFor(probe: () => Promise<boolean> | boolean, timeoutMs: number): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; !(await probe()); ) {
    if (Date.now() > deadline) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** QEMU's TLS files from an agent's cluster identity and its DH group (what Drover hands its QEMUs). */
function tlsDir(dir: string, stateDir: string): string {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const identity = readFileSync(path.join(stateDir, 'tls', 'identity.pem'), 'utf8');
  const key = /-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----\n?/.exec(identity)![0];
  const cert = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/.exec(identity)![0];
  writeFileSync(path.join(dir, 'ca-cert.pem'), readFileSync(path.join(stateDir, 'tls', 'ca.crt')));
  // The same DH group Drover's agent hands its QEMUs (without it, every server object-add generates one).
  writeFileSync(path.join(dir, 'dh-params.pem'), qemuDhParamsPem);
  for (const side of ['server', 'client']) {
    writeFileSync(path.join(dir, `${side}-cert.pem`), cert);
    writeFileSync(path.join(dir, `${side}-key.pem`), key, { mode: 0o600 });
  }
  return dir;
}

/** A raw QEMU in a host's namespace, as `account` (the agent QEMU's; the seccomp sandbox when its config asks), QMP connected. */
async function rawStart(namespace: string, config: QemuLaunchConfig, pids: number[], account: Account): Promise<{ pid: number; qmp: QmpClient }> {
  rmSync(config.qmpSocket, { force: true });
  const argv = buildQemuArgv(config);
  // As the agent's QEMU: that account, no supplementary groups (as Node's spawn with a uid leaves it).
  const child = spawn('ip', ['netns', 'exec', namespace, 'setpriv', `--reuid=${account.uid}`, `--regid=${account.gid}`, '--clear-groups', ...argv], { stdio: 'ignore', detached: true });
  child.unref();
  pids.push(child.pid!);
  for (;;) {
    if (child.exitCode !== null) throw new Error(`raw QEMU exited with ${child.exitCode}`);
    if (existsSync(config.qmpSocket)) {
      try {
        const qmp = await QmpClient.connect(config.qmpSocket, { timeoutMs: 10_000 });
        if (!config.incomingDefer) while (!(await qmp.queryStatus()).running) await new Promise((r) => setTimeout(r, 1));
        return { pid: child.pid!, qmp };
      } catch {
        /* not listening yet */
      }
    }
    await new Promise((r) => setTimeout(r, 1));
  }
}

interface Account {
  uid: number;
  gid: number;
}

/** The real uid and gid a process runs as (/proc/PID/status). */
function accountOf(pid: number): Account {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const id = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status)?.[1] ?? Number.NaN);
  const account = { uid: id('Uid'), gid: id('Gid') };
  if (!Number.isInteger(account.uid) || !Number.isInteger(account.gid)) throw new Error(`cannot read the account of process ${pid}`);
  return account;
}

/** Gives a directory and everything in it to an account (the raw QEMU's files: its TLS identity, sockets, logs). */
function chownTree(dir: string, account: Account): void {
  chownSync(dir, account.uid, account.gid);
  for (const entry of readdirSync(dir, { recursive: true }) as string[]) chownSync(path.join(dir, entry), account.uid, account.gid);
}
