/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { readdirSync, readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { dbRequest, endpoint, page } from '../testing/labs.js';

// One manager, one real agent, real QEMU guests (TCG, 96 MiB): the web-db
// example deployed once and shared by the assertions below, in order.

let cluster: TestCluster;
const api = <T = any>(method: string, route: string, body?: unknown) => cluster.api<T>(method, route, body);

async function runOp(method: string, route: string, body?: unknown): Promise<any> {
  const answer = await api(method, route, body);
  expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  const op = await cluster.waitOp(answer.body.id, 600_000);
  expect(op.state, JSON.stringify(op)).toBe('done');
  return { ...op, id: answer.body.id };
}

async function nothingMade(): Promise<void> {
  expect((await api('GET', '/api/v1/labs')).body.items).toEqual([]);
  expect((await api('GET', '/api/v1/vms')).body.items).toEqual([]);
}

describe('labs on real QEMU', () => {
  let lab: any;
  let deployOp: string;

  beforeAll(async () => {
    cluster = await startTestCluster({ labs: { networkMode: 'user', healthTimeoutMs: 240_000 } });
  });

  afterAll(async () => {
    await cluster?.close();
  });

  it('refuses bad labs with clear errors and makes nothing', async () => {
    const vm = (name: string, extra: Record<string, unknown> = {}) => ({ name, image: 'web', memoryMiB: 96, ...extra });
    const manifest = (vms: unknown[], networks: unknown[] = [{ name: 'lan', kind: 'isolated', subnet: '10.10.0.0/24' }]) => ({ name: 'bad', networks, vms });
    const cases: Array<[unknown, RegExp]> = [
      [{ name: 'cyc', manifest: manifest([vm('a', { dependsOn: ['b'] }), vm('b', { dependsOn: ['a'] })]) }, /cycle: a → b → a/],
      [{ name: 'net', manifest: manifest([vm('a', { nics: [{ network: 'nowhere' }] })]) }, /unknown network "nowhere"/],
      [{ name: 'img', manifest: manifest([vm('a', { image: 'no-such-image' })]) }, /image "no-such-image", which is not in the library/],
      [{ name: 'ex', example: 'no-such-example' }, /no lab example "no-such-example"/],
      [{ name: 'two', example: 'web-db', manifest: manifest([vm('a')]) }, /exactly one of/],
    ];
    for (const [body, message] of cases) {
      const answer = await api('POST', '/api/v1/labs', body);
      expect(answer.status, JSON.stringify(answer.body)).toBe(400);
      expect(answer.body.error.message).toMatch(message);
    }
    await nothingMade();
    expect((await api('GET', '/api/v1/operations?limit=1000')).body.items.filter((op: any) => op.kind.startsWith('lab.'))).toEqual([]);
  });

  it('deploys web-db: databases start and pass their health checks before the web servers start', async () => {
    const examples = await api('GET', '/api/v1/lab-examples');
    expect(examples.body.items.map((e: any) => e.name)).toEqual(['web-db', 'pentest']);
    // The shipped web-db example (serial checks: they work on every host), with the TCP and HTTP checks this
    // mode can make through its forwards: db-2 by its port, the web servers by GET /health.
    const manifest = examples.body.items[0].manifest;
    manifest.vms.find((v: any) => v.name === 'db-2').healthCheck = { kind: 'tcp', port: 7000 };
    for (const web of manifest.vms.filter((v: any) => v.name.startsWith('web'))) web.healthCheck = { kind: 'http', port: 80, path: '/health', expect: 'ok' };
    const op = await runOp('POST', '/api/v1/labs', { name: 'wd', manifest });
    deployOp = op.id;
    lab = (await api('GET', '/api/v1/labs/wd')).body;
    expect(lab.state).toBe('running');
    expect(lab.updatePolicy).toBe('pinned');
    expect(lab.vms.map((v: any) => [v.vm, v.state, v.order])).toEqual([
      ['wd-db-1', 'running', 0],
      ['wd-db-2', 'running', 0],
      ['wd-web-1', 'running', 1],
      ['wd-web-2', 'running', 1],
    ]);
    // The lab's one operation journals each start and each passed health check, in dependency order.
    const journal = (await cluster.manager.store.operations.get(deployOp)).journal.map((e) => `${e.phase} ${e.note ?? ''}`.trim());
    const at = (entry: RegExp) => journal.findIndex((line) => entry.test(line));
    for (const db of ['db-1', 'db-2']) {
      expect(at(new RegExp(`^healthy ${db}: ${db === 'db-1' ? 'serial' : 'tcp port 7000'}`))).toBeGreaterThan(at(new RegExp(`^start ${db}$`)));
      for (const web of ['web-1', 'web-2']) expect(at(new RegExp(`^healthy ${db}:`))).toBeLessThan(at(new RegExp(`^start ${web}$`)));
    }
    for (const web of ['web-1', 'web-2']) expect(at(new RegExp(`^healthy ${web}: http 80/health`))).toBeGreaterThan(0);
    // The VMs' own start operations (the normal VM service) tell the same order.
    const ops = (await api('GET', '/api/v1/operations?limit=1000')).body.items.filter((o: any) => o.kind === 'vm.start');
    const byVm = new Map(lab.vms.map((v: any) => [v.vmId, v.name]));
    const dbEnds = ops.filter((o: any) => String(byVm.get(o.targetId)).startsWith('db')).map((o: any) => Date.parse(o.finishedAt));
    const webStarts = ops.filter((o: any) => String(byVm.get(o.targetId)).startsWith('web')).map((o: any) => Date.parse(o.createdAt));
    expect(dbEnds).toHaveLength(2);
    expect(webStarts).toHaveLength(2);
    expect(Math.max(...dbEnds)).toBeLessThanOrEqual(Math.min(...webStarts));
    // Labels say which lab a VM belongs to.
    expect((await api('GET', '/api/v1/vms/wd-web-1')).body.labels).toMatchObject({ lab: 'wd', 'lab-vm': 'web-1' });
  }, 900_000);

  it('serves pages built from the databases\' data', async () => {
    // Seeded at deploy (drover.dbinit in the example), then changed live.
    expect(await dbRequest(endpoint(lab, 'db-1', 7000), ['GET greeting'])).toEqual(['VALUE served-by-db-1']);
    expect(await dbRequest(endpoint(lab, 'db-1', 7000), ['SET greeting from-db-1'])).toEqual(['OK']);
    expect(await dbRequest(endpoint(lab, 'db-2', 7000), ['SET greeting from-db-2'])).toEqual(['OK']);
    const web1 = await page(endpoint(lab, 'web-1', 80));
    expect(web1).toContain('<h1 id="name">wd-web-1</h1>');
    expect(web1).toContain('<span id="db-value">from-db-1</span>');
    expect(await page(endpoint(lab, 'web-2', 80))).toContain('<span id="db-value">from-db-2</span>');
  }, 900_000);

  it('snapshots every VM of the lab in one operation', async () => {
    await runOp('POST', '/api/v1/labs/wd/snapshot', { name: 'before-class' });
    for (const v of lab.vms) {
      const snapshots = (await api('GET', `/api/v1/vms/${v.vmId}/snapshots`)).body.map((s: any) => s.name);
      expect(snapshots).toEqual(expect.arrayContaining(['lab-initial', 'before-class']));
    }
    const reserved = await api('POST', '/api/v1/labs/wd/snapshot', { name: 'lab-initial' });
    expect(reserved.status).toBe(400);
  }, 900_000);

  it('stops in reverse order, starts again, and reset brings the disks back to their state at deploy', async () => {
    const db = () => endpoint(lab, 'db-1', 7000);
    expect(await dbRequest(db(), ['SET marker written-after-deploy'])).toEqual(['OK']);
    // A clean stop (the db flushes and unmounts its data disk), then a start: the marker is on disk.
    const stop = await runOp('POST', '/api/v1/labs/wd/stop', {});
    const stopJournal = (await cluster.manager.store.operations.get(stop.id)).journal.map((e) => `${e.phase} ${e.note ?? ''}`.trim());
    expect(stopJournal.findIndex((l) => /^stop web-/.test(l))).toBeLessThan(stopJournal.findIndex((l) => /^stop db-/.test(l)));
    expect((await api('GET', '/api/v1/labs/wd')).body.state).toBe('stopped');
    await runOp('POST', '/api/v1/labs/wd/start', {});
    expect(await dbRequest(db(), ['GET marker'])).toEqual(['VALUE written-after-deploy']);
    await runOp('POST', '/api/v1/labs/wd/reset', {});
    const after = (await api('GET', '/api/v1/labs/wd')).body;
    expect(after.state).toBe('running');
    expect(after.vms.every((v: any) => v.state === 'running')).toBe(true);
    // The seed the example gives db-1 at deploy (drover.dbinit) is back; what came later is gone.
    expect(await dbRequest(db(), ['GET marker', 'GET greeting'])).toEqual(['NOTFOUND', 'VALUE served-by-db-1']);
    expect(await page(endpoint(lab, 'web-1', 80))).toContain('<span id="db-value">served-by-db-1</span>');
  }, 900_000);

  it('clones the lab: a second copy runs beside it with its own addresses', async () => {
    await runOp('POST', '/api/v1/labs/wd/clone', { name: 'wd2' });
    const clone = (await api('GET', '/api/v1/labs/wd2')).body;
    expect(clone.state).toBe('running');
    expect(clone.source).toEqual({ kind: 'clone', ref: 'wd' });
    expect(clone.vms.map((v: any) => [v.vm, v.state])).toEqual([['wd2-db-1', 'running'], ['wd2-db-2', 'running'], ['wd2-web-1', 'running'], ['wd2-web-2', 'running']]);
    // No address, subnet or port is shared between the two labs.
    const addresses = (l: any) => l.vms.flatMap((v: any) => v.addresses);
    expect(addresses(clone).filter((a: string) => addresses(lab).includes(a))).toEqual([]);
    expect(clone.networks[0].subnet).not.toBe(lab.networks[0].subnet);
    const ports = (l: any) => l.vms.flatMap((v: any) => v.endpoints.map((e: any) => e.hostPort));
    expect(ports(clone).filter((p: number) => ports(lab).includes(p))).toEqual([]);
    // Both run at once, each web server reading its own lab's database.
    expect(await dbRequest(endpoint(lab, 'db-1', 7000), ['SET greeting original'])).toEqual(['OK']);
    expect(await dbRequest(endpoint(clone, 'db-1', 7000), ['SET greeting the-clone'])).toEqual(['OK']);
    expect(await page(endpoint(lab, 'web-1', 80))).toContain('<span id="db-value">original</span>');
    expect(await page(endpoint(clone, 'web-1', 80))).toContain('<span id="db-value">the-clone</span>');
    const running = (await api('GET', '/api/v1/vms?limit=1000')).body.items.filter((v: any) => v.state === 'running');
    expect(running).toHaveLength(8);
  }, 900_000);

  it('destroys both labs, leaving no VM, disk or lab behind', async () => {
    const vmIds = [...lab.vms.map((v: any) => v.vmId), ...(await api('GET', '/api/v1/labs/wd2')).body.vms.map((v: any) => v.vmId)];
    const before = (await api('GET', '/api/v1/vms?limit=1000')).body.items.map((v: any) => `${v.name} ${v.id} ${v.state} ${v.hostName}`);
    await runOp('DELETE', '/api/v1/labs/wd');
    await runOp('DELETE', '/api/v1/labs/wd2');
    await nothingMade();
    expect((await api('GET', '/api/v1/labs/wd')).status).toBe(404);
    const volumes = (await api('GET', '/api/v1/hosts/h1/pools/default/volumes')).body as Array<{ name: string }>;
    expect(volumes.filter((v) => vmIds.some((id: string) => v.name.startsWith(id))), before.join('\n')).toEqual([]);
    // No QEMU of theirs is left running.
    const processes = readdirSync('/proc').filter((p) => /^\d+$/.test(p)).map((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8');
      } catch {
        return '';
      }
    });
    expect(processes.filter((cmdline) => vmIds.some((id: string) => cmdline.includes(id)))).toEqual([]);
  }, 900_000);
});
