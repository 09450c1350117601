import { randomUUID } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { VmInfo } from '@drover/api';
import {
  counterLines,
  defineApplianceVm,
  freePort,
  importAppliance,
  processGone,
  startTestAgent,
  type ImportedAppliance,
  type TestAgent,
} from './testing/harness.js';

/**
 * Real guests on real QEMU (TCG): every assertion reads the guest's own
 * serial console or talks to its services. One agent and few boots are
 * shared between the steps, in the order an operator would do them.
 */
let t: TestAgent;
let counter: ImportedAppliance;
let web: ImportedAppliance;

beforeAll(async () => {
  t = await startTestAgent();
  [counter, web] = await Promise.all([importAppliance(t.client, 'counter'), importAppliance(t.client, 'web')]);
});

afterAll(async () => {
  await t?.dispose();
});

describe('web appliance', () => {
  it('boots, prints its ready line and answers on its forwarded port; a graceful stop ends QEMU', async () => {
    const port = await freePort();
    const id = await defineApplianceVm(t.client, web, 'web-1', { forwards: [{ hostPort: port, guestPort: 80 }] });
    const started = await t.client.action(id, 'start');
    expect(started.state).toBe('running');
    const ready = await t.client.waitForSerial(id, /DROVER-READY appliance=web version=(\S+) name=web-1/);
    const page = await (await fetch(`http://127.0.0.1:${port}/`)).text();
    expect(page).toContain('web-1');
    expect(page).toContain(ready.match[1]);

    const pid = started.pid!;
    const stopped = await t.client.action(id, 'stop', { timeoutMs: 30_000 });
    expect(stopped.state).toBe('stopped');
    // The guest went down by itself (ACPI → poweroff), it was not killed.
    await t.client.waitForSerial(id, /reboot: Power down|Requesting system poweroff/, { timeoutMs: 5_000 });
    expect(await processGone(pid)).toBe(true);
  });
});

describe('counter appliance', () => {
  let id: string;
  let vm: VmInfo;

  async function lastGen(offset = 0): Promise<{ gen: number; next: number }> {
    const { text, next } = await t.client.serialLog(id, offset);
    const lines = counterLines(text);
    return { gen: lines.at(-1)?.gen ?? -1, next };
  }

  /** Waits until the counter has printed a generation above `gen` after `offset`. */
  async function waitBeyond(gen: number, offset = 0): Promise<number> {
    const deadline = Date.now() + 90_000;
    for (;;) {
      const last = await lastGen(offset);
      if (last.gen > gen) return last.gen;
      if (Date.now() > deadline) throw new Error(`counter did not pass generation ${gen}; last ${last.gen}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  it('starts under the QEMU account with seccomp, and counts', async () => {
    id = await defineApplianceVm(t.client, counter, 'counter-1', { memoryMiB: 128 });
    vm = await t.client.action(id, 'start');
    await t.client.waitForSerial(id, /DROVER-READY appliance=counter/);
    await waitBeyond(5);

    const status = await readFile(`/proc/${vm.pid}/status`, 'utf8');
    const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1]);
    const passwd = await readFile('/etc/passwd', 'utf8');
    const droverUid = Number(/^drover:[^:]*:(\d+):/m.exec(passwd)?.[1]);
    expect(uid).toBe(droverUid);
    expect(uid).not.toBe(0);
    expect(/^Seccomp:\s+(\d)/m.exec(status)?.[1]).toBe('2');
    // Consoles listen on unix sockets only.
    const cmdline = (await readFile(`/proc/${vm.pid}/cmdline`, 'utf8')).split('\0');
    expect(cmdline.join(' ')).toMatch(/-vnc unix:/);
  });

  it('pause freezes the counter and resume continues it without a gap', async () => {
    await t.client.action(id, 'pause');
    const frozen = await lastGen();
    await new Promise((r) => setTimeout(r, 1_500));
    const still = await lastGen();
    expect(still.gen).toBe(frozen.gen);
    expect((await t.client.vm(id)).state).toBe('paused');

    await t.client.action(id, 'resume');
    const after = await waitBeyond(frozen.gen + 3, frozen.next);
    const lines = counterLines((await t.client.serialLog(id, 0)).text);
    const gens = lines.map((l) => l.gen).filter((g) => g >= frozen.gen - 5 && g <= after);
    for (let i = 1; i < gens.length; i++) expect(gens[i]).toBe(gens[i - 1]! + 1);
  });

  it('save ends QEMU; restore continues the counter from where it stopped', async () => {
    const pid = (await t.client.vm(id)).pid!;
    const saved = await t.client.action(id, 'save');
    expect(saved.state).toBe('saved');
    expect(saved.pid).toBeUndefined();
    expect(await processGone(pid)).toBe(true);
    expect(saved.savedState!.bytes).toBeGreaterThan(1024 * 1024);
    const before = await lastGen();

    const restored = await t.client.action(id, 'restore');
    expect(restored.state).toBe('running');
    expect(restored.pid).not.toBe(pid);
    const after = await waitBeyond(before.gen + 3, before.next);
    const fresh = counterLines((await t.client.serialLog(id, before.next)).text);
    // The first generation after the restore is the next one: nothing lost, nothing repeated.
    expect(fresh[0]!.gen).toBe(before.gen + 1);
    expect(after).toBeGreaterThan(before.gen);
    await expect(stat(saved.savedState!.file)).rejects.toThrow();
  });

  it('a snapshot reverts both memory and disk: a write made after it is gone', async () => {
    await t.client.ok('POST', `/v1/vms/${id}/snapshots`, { name: 'before-write' });
    const atSnapshot = await lastGen();
    // Write a marker through the serial console's shell, then check it is there.
    const ws = new WebSocket(`${t.client.url.replace('http', 'ws')}/v1/vms/${id}/console/serial`, {
      headers: { authorization: `Bearer ${t.client.token}` },
    });
    await new Promise((resolve, reject) => {
      ws.once('open', resolve);
      ws.once('error', reject);
    });
    let seen = '';
    ws.on('message', (data: Buffer) => (seen += data.toString()));
    ws.send('\necho marker > /root/marker-file; sync; test -e /root/marker-file && echo MARK-$((40+2))\n');
    const deadline = Date.now() + 30_000;
    while (!seen.includes('MARK-42') && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    expect(seen).toContain('MARK-42');
    await waitBeyond(atSnapshot.gen + 20, atSnapshot.next);

    const beforeRevert = await lastGen();
    const revertOffset = beforeRevert.next;
    await t.client.action(id, 'snapshots/before-write/revert');
    seen = '';
    ws.send('\ntest -e /root/marker-file && echo MARK-$((40+2)) || echo GONE-$((40+3))\n');
    const deadline2 = Date.now() + 30_000;
    while (!/MARK-42|GONE-43/.test(seen) && Date.now() < deadline2) await new Promise((r) => setTimeout(r, 100));
    ws.close();
    expect(seen).toContain('GONE-43');
    // Memory went back too: the counter jumps back to the snapshot's generation and goes on
    // from there (lines printed before the revert took effect come first).
    let jump: { from: number; to: number } | undefined;
    for (const deadline = Date.now() + 30_000; !jump && Date.now() < deadline; ) {
      // The last generation before the revert leads, so a revert that lands before the next line still shows as a jump.
      const gens = [beforeRevert.gen, ...counterLines((await t.client.serialLog(id, revertOffset)).text).map((l) => l.gen)];
      const at = gens.findIndex((g, i) => i > 0 && g < gens[i - 1]!);
      if (at > 0) jump = { from: gens[at - 1]!, to: gens[at]! };
      else await new Promise((r) => setTimeout(r, 100));
    }
    expect(jump).toBeDefined();
    expect(jump!.to).toBeLessThanOrEqual(atSnapshot.gen + 1);

    const listed = await t.client.ok<Array<{ name: string }>>('GET', `/v1/vms/${id}/snapshots`);
    expect(listed.map((s) => s.name)).toEqual(['before-write']);
    await t.client.ok('DELETE', `/v1/vms/${id}/snapshots/before-write`);
    expect((await t.client.vm(id)).snapshots).toEqual([]);
  });

  it('the VNC console answers with the RFB handshake', async () => {
    const ws = new WebSocket(`${t.client.url.replace('http', 'ws')}/v1/vms/${id}/console/vnc`, {
      headers: { authorization: `Bearer ${t.client.token}` },
    });
    const greeting = await new Promise<string>((resolve, reject) => {
      ws.once('message', (data: Buffer) => resolve(data.toString()));
      ws.once('error', reject);
    });
    ws.close();
    expect(greeting).toMatch(/^RFB 003\.00\d/);
  });

  it('refuses a second start and unknown actions on a running VM', async () => {
    const again = await t.client.request('POST', `/v1/vms/${id}/start`, {});
    expect(again.status).toBe(409);
    const unauth = await fetch(`${t.client.url}/v1/vms`, { headers: { authorization: 'Bearer wrong-token' } });
    expect(unauth.status).toBe(401);
    await t.client.action(id, 'force-off');
    expect((await t.client.vm(id)).state).toBe('stopped');
  });

  it('a start with a spec defines an unknown VM and starts it, rewrites a stopped one, and leaves a running one as it is', async () => {
    const newId = randomUUID();
    const root = 'counter-2.root.qcow2';
    await t.client.createVolume(counter.pool, { name: root, cloneOf: counter.root });
    const { id: _oldId, ...base } = (await t.client.vm(id)).spec; // counter-1's definition, for another VM
    const spec = { ...base, id: newId, name: 'counter-2', disks: [{ pool: counter.pool, volume: root }], nics: [{ forwards: [] }] };
    try {
      // The spec's id must be the VM in the path: refused, and nothing is defined.
      const mismatch = await t.client.request('POST', `/v1/vms/${newId}/start`, { spec: { ...spec, id: randomUUID() } });
      expect(mismatch.status).toBe(400);
      expect((await t.client.request('GET', `/v1/vms/${newId}`)).status).toBe(404);

      // Unknown here: defined with the spec, then started, in one request.
      const started = await t.client.action(newId, 'start', { spec });
      expect(started).toMatchObject({ id: newId, name: 'counter-2', state: 'running' });
      await t.client.waitForSerial(newId, /DROVER-READY appliance=counter/);

      // Running: refused as without a spec, and its definition stays.
      const again = await t.client.request('POST', `/v1/vms/${newId}/start`, { spec: { ...spec, memoryMiB: 160 } });
      expect(again.status).toBe(409);
      expect((await t.client.vm(newId)).spec.memoryMiB).toBe(spec.memoryMiB);

      // Stopped: the spec replaces its definition (as PUT does), then it starts with it.
      await t.client.action(newId, 'force-off');
      const restarted = await t.client.action(newId, 'start', { spec: { ...spec, memoryMiB: 160 } });
      expect(restarted).toMatchObject({ state: 'running', spec: { memoryMiB: 160 } });
      const argv = (await readFile(`/proc/${restarted.pid}/cmdline`, 'utf8')).split('\0');
      // 160 MiB; under TCG 8 KiB less (see qemuMemoryArg).
      expect(argv[argv.indexOf('-m') + 1]).toMatch(/^(160M|163832k)$/);
    } finally {
      await t.client.request('POST', `/v1/vms/${newId}/force-off`, {});
      await t.client.request('DELETE', `/v1/vms/${newId}`);
      await t.client.request('DELETE', `/v1/pools/${counter.pool}/volumes/${root}`);
    }
  });
});
