import { rmSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { readProcessInfo, waitForExit } from '@drover/qemu';
import { counterLines, defineApplianceVm, forceOffAll, importAppliance, processGone, spawnAgentProcess, tempDir, type AgentClient } from './testing/harness.js';

/**
 * The agent is a real process here, killed with SIGKILL while three guests run:
 * QEMU must not notice, and the next agent must adopt the very same processes.
 */
const stateDir = tempDir('reattach');
const agentPids: number[] = [];
let client: AgentClient | undefined;

afterAll(async () => {
  try {
    if (client) await forceOffAll(client);
  } finally {
    for (const pid of agentPids) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
    rmSync(stateDir, { recursive: true, force: true });
  }
});

describe('agent restart', () => {
  it('after kill -9 the new agent reattaches to the same 3 QEMU processes and can act on them', async () => {
    const first = await spawnAgentProcess(stateDir);
    agentPids.push(first.pid);
    client = first.client;
    const appliance = await importAppliance(first.client, 'counter');
    const ids = await Promise.all(['r1', 'r2', 'r3'].map((name) => defineApplianceVm(first.client, appliance, name, { memoryMiB: 96 })));
    for (const id of ids) await first.client.action(id, 'start');
    await Promise.all(ids.map((id) => first.client.waitForSerial(id, /DROVER-COUNTER gen=\d+/)));
    const pidsBefore = await Promise.all(ids.map(async (id) => (await first.client.vm(id)).pid!));

    first.child.kill('SIGKILL');
    await waitForExit(first.pid, 10_000);
    for (const pid of pidsBefore) expect((await readProcessInfo(pid))?.alive).toBe(true);

    const second = await spawnAgentProcess(stateDir);
    agentPids.push(second.pid);
    client = second.client;
    const vms = await Promise.all(ids.map((id) => second.client.vm(id)));
    expect(vms.map((v) => v.pid)).toEqual(pidsBefore);
    expect(vms.map((v) => v.state)).toEqual(['running', 'running', 'running']);

    // Every action works again on the adopted processes.
    const [a, b, c] = ids as [string, string, string];
    expect((await second.client.action(a, 'pause')).state).toBe('paused');
    expect((await second.client.action(a, 'resume')).state).toBe('running');
    const offset = (await second.client.serialLog(b)).next;
    await second.client.waitForSerial(b, /DROVER-COUNTER gen=\d+/, { offset });
    expect(counterLines((await second.client.serialLog(b, offset)).text).length).toBeGreaterThan(0);
    expect((await second.client.action(b, 'stop', { timeoutMs: 30_000 })).state).toBe('stopped');
    expect((await second.client.action(c, 'force-off')).state).toBe('stopped');
    expect((await second.client.action(a, 'force-off')).state).toBe('stopped');
    for (const pid of pidsBefore) expect(await processGone(pid)).toBe(true);

    // A QEMU that died while no agent watched is reported stopped, not running.
    await second.client.action(a, 'start');
    const lonely = (await second.client.vm(a)).pid!;
    second.child.kill('SIGKILL');
    await waitForExit(second.pid, 10_000);
    process.kill(lonely, 'SIGKILL');
    await waitForExit(lonely, 10_000);
    const third = await spawnAgentProcess(stateDir);
    agentPids.push(third.pid);
    client = third.client;
    const after = await third.client.vm(a);
    expect(after.state).toBe('stopped');
    expect(after.pid).toBeUndefined();
  });
});
