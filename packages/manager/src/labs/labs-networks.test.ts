/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { destroyLabAndExpectGone, destroyLabIfLeft, expectLabIsolated, expectWebShowsDb, labPrefix } from '../testing/labs.js';

// A lab on Drover networks (the manager's network service, taps on a bridge of
// the agent's host): its own isolated network and security groups, named after
// the lab, with a subnet from the lab pool; the web VM reads its db over the
// lab network (the page it serves holds its db's seeded value); destroy removes VMs, network, groups, bridge and taps.

let cluster: TestCluster;
let bridge = '';
const api = <T = any>(method: string, route: string, body?: unknown) => cluster.api<T>(method, route, body);

describe('a lab on Drover networks', () => {
  let lab: any;

  beforeAll(async () => {
    cluster = await startTestCluster({ labs: { healthTimeoutMs: 240_000 } });
  });

  afterAll(async () => {
    await destroyLabIfLeft(cluster, 'n1');
    await cluster?.close();
  });

  it('deploys on its own isolated network with groups named after the lab', async () => {
    const answer = await api('POST', '/api/v1/labs', { name: 'n1', example: 'web-db' });
    expect(answer.status, JSON.stringify(answer.body)).toBe(202);
    const op = await cluster.waitOp(answer.body.id, 600_000);
    expect(op.state, JSON.stringify(op)).toBe('done');
    lab = (await api('GET', '/api/v1/labs/n1')).body;
    expect(lab.networkMode).toBe('networks');
    expect(lab.networks).toEqual([{ name: 'lan', network: 'n1-lan', kind: 'isolated', subnet: expect.stringMatching(/^10\.213\.\d+\.0\/24$/) }]);
    const prefix = labPrefix(lab);
    expect(lab.vms.map((v: any) => [v.vm, v.state, v.addresses])).toEqual([
      ['n1-db-1', 'running', [`${prefix}11`]],
      ['n1-db-2', 'running', [`${prefix}12`]],
      ['n1-web-1', 'running', [`${prefix}21`]],
      ['n1-web-2', 'running', [`${prefix}22`]],
    ]);
    // Each VM's NIC is on the lab's network with its lab address.
    const nics = (await api('GET', '/api/v1/vms/n1-web-1/networks')).body.items;
    expect(nics).toMatchObject([{ network: 'n1-lan', ip: `${prefix}21`, securityGroups: ['n1-web'] }]);
    const network = (await api('GET', '/api/v1/networks/n1-lan')).body;
    expect(network).toMatchObject({ name: 'n1-lan', kind: 'isolated', subnet: lab.networks[0].subnet, lab: 'n1' });
    const groups = (await api('GET', '/api/v1/security-groups')).body.items.filter((g: any) => g.lab === 'n1').map((g: any) => g.name).sort();
    expect(groups).toEqual(['n1-db', 'n1-web']);
  }, 900_000);

  it('serves, on each web VM, a page built from its database over the lab network', async () => {
    // The web VMs' health check waits for DROVER-WEB-DB, which a web VM prints once its own page shows
    // the value its db holds; the db VMs were seeded by drover.dbinit. A db is reachable only over the
    // lab network (its group admits the web group on port 7000): the value proves the path.
    const prefix = labPrefix(lab);
    await expectWebShowsDb(cluster, [
      { web: 'n1-web-1', dbAddress: `${prefix}11`, value: 'served-by-db-1' },
      { web: 'n1-web-2', dbAddress: `${prefix}12`, value: 'served-by-db-2' },
    ]);
  }, 120_000);

  it('isolates the lab: its bridge has no route in or out, the host cannot reach it, and its groups are loaded into the host firewall', async () => {
    const prefix = labPrefix(lab);
    bridge = await expectLabIsolated(cluster, 'n1', [`${prefix}21`, `${prefix}22`]);
  }, 120_000);

  it('destroys the lab with its network, groups, bridge and taps', async () => {
    await destroyLabAndExpectGone(cluster, lab, bridge);
    expect((await api('GET', '/api/v1/labs')).body.items).toEqual([]);
    expect((await api('GET', '/api/v1/vms')).body.items).toEqual([]);
  }, 900_000);
});
