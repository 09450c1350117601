import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAgentServer } from '../server.js';
import type { PoolRegistry } from '../pools.js';
import type { VmService } from '../vm-service.js';
import { NetworkStateService } from './network-state.service.js';
import { exec, ScratchNamespaces } from './testing/scratch-netns.js';
import { labState } from './testing/fixtures.js';

const spaces = new ScratchNamespaces();
const stateDir = mkdtempSync(path.join(tmpdir(), 'drover-netroutes-'));
let service: NetworkStateService;
let app: Awaited<ReturnType<typeof buildAgentServer>>;
let ns: string;
const auth = { authorization: 'Bearer t0ken' };

beforeAll(async () => {
  ns = await spaces.create('r');
  // The uplinks the fixture names must exist: the bridged network enslaves eth1.
  await exec(ns, 'ip', 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0p');
  await exec(ns, 'ip', 'link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'eth1p');
  service = new NetworkStateService({ stateDir, namespace: ns, metadataService: false });
  // The network routes need no VM or pool: a unit-test stand-in is enough for the rest of the server.
  app = await buildAgentServer({
    token: 't0ken', vms: { list: () => [] } as unknown as VmService, pools: {} as PoolRegistry,
    facts: async () => { throw new Error('unused'); }, logger: pino({ level: 'silent' }), networks: service,
  });
});
afterAll(async () => {
  await app?.close();
  await service?.destroy().catch(() => undefined);
  await spaces.destroy();
  rmSync(stateDir, { recursive: true, force: true });
});

describe('PUT /v1/network-state (agent, real links and nft in a namespace)', () => {
  it('has nothing to explain before the first apply', async () => {
    const answer = await app.inject({ method: 'GET', url: '/v1/network-state/ruleset', headers: auth });
    expect(answer.statusCode).toBe(404);
  });

  it('creates bridges, taps, VXLAN and dnsmasq, and loads the rules', async () => {
    const answer = await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: labState });
    expect(answer.statusCode).toBe(200);
    expect(answer.json().ruleCount).toBeGreaterThan(30);
    const links = await exec(ns, 'ip', '-o', 'link');
    for (const name of ['drbr-lab', 'drbr-nat', 'drbr-office', 'dt1', 'dt2', 'dt3', 'dvx42']) expect(links).toContain(`${name}:`);
    expect(links).toMatch(/eth1.*master drbr-office/);
    expect(await exec(ns, 'nft', 'list', 'table', 'bridge', 'drover')).toContain('"dt1"');
    // pgrep sees every namespace's processes: ours are the ones using this test's state directory.
    expect(await exec(ns, 'pgrep', '-a', 'dnsmasq')).toContain(`--dhcp-hostsfile=${stateDir}/lab.hosts`);
    const explained = await app.inject({ method: 'GET', url: '/v1/network-state/ruleset', headers: auth });
    expect(explained.json().script).toContain('chain ingress_3');
  });

  it('refuses bad input with a clear error and changes nothing', async () => {
    const before = await exec(ns, 'nft', 'list', 'ruleset');
    const linksBefore = await exec(ns, 'ip', '-o', 'link');
    const bad = structuredClone(labState);
    bad.groups[0]!.rules[0]!.group = 'web';
    bad.groups[0]!.rules[0]!.cidr = undefined;
    const answer = await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: bad });
    expect(answer.statusCode).toBe(400);
    expect(answer.json().error).toMatchObject({ code: 'invalid', message: expect.stringMatching(/cannot refer to itself/) });
    const overlap = structuredClone(labState);
    overlap.networks[1]!.subnet = '10.77.0.0/16';
    expect((await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: overlap })).json().error.message).toMatch(/overlaps/);
    const unknownField = await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: { ...labState, extra: 1 } });
    expect(unknownField.statusCode).toBe(400);
    expect(await exec(ns, 'nft', 'list', 'ruleset')).toBe(before);
    expect(await exec(ns, 'ip', '-o', 'link')).toBe(linksBefore);
  });

  it('makes a changed network again and moves its taps, the same devices, to the new bridge', async () => {
    const changed = structuredClone(labState);
    changed.networks[0]!.mtu = 1400;
    // The tap stays the same device (a running QEMU holds it open): only moved to the new bridge.
    const before = (await exec(ns, 'ip', '-o', 'link', 'show', 'dt1')).split(':')[0];
    expect((await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: changed })).statusCode).toBe(200);
    expect((await exec(ns, 'ip', '-o', 'link', 'show', 'dt1')).split(':')[0]).toBe(before);
    const links = await exec(ns, 'ip', '-o', 'link');
    expect(links).toMatch(/drbr-lab: .*mtu 1400/);
    expect(links).toMatch(/dt1: .*master drbr-lab/);
    expect(links).toMatch(/dt2: .*master drbr-nat/);
  });

  it('removes a VM: its tap and its rules go, the others stay', async () => {
    const smaller = structuredClone(labState);
    smaller.nics = smaller.nics.filter((nic) => nic.vm !== 'web-1');
    expect((await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: smaller })).statusCode).toBe(200);
    expect(await exec(ns, 'ip', '-o', 'link')).not.toContain('dt1:');
    const tables = await exec(ns, 'nft', 'list', 'ruleset');
    expect(tables).not.toContain('"dt1"');
    expect(tables).toContain('"dt2"');
  });

  it('removes networks no longer wanted, with their dnsmasq', async () => {
    const empty = { networks: [], groups: [], nics: [], hostRules: [] };
    expect((await app.inject({ method: 'PUT', url: '/v1/network-state', headers: auth, payload: empty })).statusCode).toBe(200);
    expect(await exec(ns, 'ip', '-o', 'link')).not.toContain('drbr-');
    expect((await exec(ns, 'pgrep', '-a', 'dnsmasq').catch(() => ''))).not.toContain(stateDir);
  });
});
