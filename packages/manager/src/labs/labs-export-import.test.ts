/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';
import { dbRequest, destroyLabAndExpectGone, destroyLabIfLeft, endpoint, expectLabIsolated, expectWebShowsDb, labPrefix, page } from '../testing/labs.js';

// Three managers, each with its own data directory and its own real agent. A and
// B run labs on QEMU user networking with loopback forwards (so the test can
// write to a db and read pages): a lab of the demo db and web appliances runs on
// A, a value is written to the db's data disk, the stopped lab is exported as a
// signed package, the file is imported on B and deployed there as a lab. B's web
// VM serves a page built from B's db VM, whose data disk holds what was written
// on A; reset goes back to the imported disks; a clone runs beside it. C runs
// labs on Drover networks (the default): the same file imported there deploys on
// the lab's own isolated network, its web VM shows A's value read from its db
// over that network, nothing crosses the network's bridge, and destroy leaves no
// bridge or taps. One deploy on each manager serves the assertions below, in order.

let a: TestCluster;
let b: TestCluster;
let c: TestCluster;

async function runOp(c: TestCluster, method: string, route: string, body?: unknown): Promise<any> {
  const answer = await c.api<any>(method, route, body);
  expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  const op = await c.waitOp(answer.body.id, 600_000);
  expect(op.state, JSON.stringify(op)).toBe('done');
  return { ...op, id: answer.body.id };
}

/** Two VMs of the shipped web-db example: db-1 (seeded, with its data disk) and web-1 showing its value. */
async function twoVmManifest(c: TestCluster): Promise<any> {
  const manifest = (await c.api<any>('GET', '/api/v1/lab-examples')).body.items.find((e: any) => e.name === 'web-db').manifest;
  manifest.name = 'pair';
  manifest.vms = manifest.vms.filter((v: any) => ['db-1', 'web-1'].includes(v.name));
  const web = manifest.vms.find((v: any) => v.name === 'web-1');
  web.dependsOn = ['db-1'];
  // The example's serial check (DROVER-WEB-DB ok) stays: an HTTP check from the manager could never
  // pass on C's isolated network. The page's own address in the web VM's settings (a key the appliance
  // does not use) gives it a loopback forward of port 80 in user mode, so the test reads pages on A and B.
  expect(web.healthCheck).toEqual({ kind: 'serial', pattern: 'DROVER-WEB-DB ok' });
  web.guest.cmdline += ' drover.site=10.10.0.21:80';
  return manifest;
}

describe('a lab exported on one manager, imported and deployed on another', () => {
  let imported: any;
  let pkgB: any;
  let key: any;
  let bytes: Buffer;

  beforeAll(async () => {
    a = await startTestCluster({ hostName: 'site-a', labs: { networkMode: 'user', healthTimeoutMs: 240_000 } });
    b = await startTestCluster({ hostName: 'site-b', labs: { networkMode: 'user', healthTimeoutMs: 240_000 } });
    // Networks mode: its agent makes the lab's bridge, taps and nft rules in this host's root namespace.
    c = await startTestCluster({ hostName: 'site-c', labs: { healthTimeoutMs: 240_000 } });
  }, 180_000);

  afterAll(async () => {
    try {
      await a?.close();
    } finally {
      try {
        await b?.close();
      } finally {
        await destroyLabIfLeft(c, 'iso');
        await c?.close();
      }
    }
  });

  it('exports a stopped lab of A with every disk and its manifest, and imports the file on B', async () => {
    await runOp(a, 'POST', '/api/v1/labs', { name: 'src', manifest: await twoVmManifest(a) });
    const src = (await a.api<any>('GET', '/api/v1/labs/src')).body;
    // Written on A after the seed: it lives on db-1's data disk only.
    expect(await dbRequest(endpoint(src, 'db-1', 7000), ['GET greeting'])).toEqual(['VALUE served-by-db-1']);
    expect(await dbRequest(endpoint(src, 'db-1', 7000), ['SET greeting written-on-a', 'SET marker from-site-a'])).toEqual(['OK', 'OK']);
    expect(await page(endpoint(src, 'web-1', 80))).toContain('<span id="db-value">written-on-a</span>');

    // A running lab is refused (its disks change under the copy); a clean stop flushes the db's data disk.
    key = (await a.api<any>('POST', '/api/v1/vmcast/keys', { name: 'site-a' })).body;
    const running = await a.api<any>('POST', '/api/v1/packages/export', { name: 'pair', version: '1', lab: 'src' });
    expect(running.status).toBe(409);
    expect(running.body.error.message).toMatch(/VM "src-db-1" is running; only stopped VMs can be exported/);
    const both = await a.api<any>('POST', '/api/v1/packages/export', { name: 'pair', version: '1', lab: 'src', vms: ['src-db-1'] });
    expect(both.status).toBe(400);
    expect(both.body.error.message).toMatch(/exactly one of "vms" or "lab"/);
    await runOp(a, 'POST', '/api/v1/labs/src/stop', {});
    const exported = await a.api<any>('POST', '/api/v1/packages/export?wait=true', { name: 'pair', version: '1', lab: 'src' });
    expect(exported.body.state, JSON.stringify(exported.body)).toBe('done');
    const pkgA = exported.body.result.package;
    const m = pkgA.manifest;
    // The lab's manifest, not what the deploy made of it: VM names, template subnet and addresses, guest settings, order, checks.
    expect(m.networks).toEqual([{ name: 'lan', kind: 'isolated', subnet: '10.10.0.0/24' }]);
    expect(m.securityGroups.map((g: any) => g.name)).toEqual(['web', 'db']);
    expect(m.vms.map((v: any) => v.name)).toEqual(['db-1', 'web-1']);
    const [db, web] = m.vms;
    expect(db).toMatchObject({ memoryMiB: 96, boot: { method: 'appliance' }, nics: [{ network: 'lan', securityGroups: ['db'], ip: '10.10.0.11' }], guest: { cmdline: 'drover.dbinit=greeting:served-by-db-1' } });
    expect(db.disks.map((d: any) => d.role)).toEqual(['root', 'data']);
    expect(web).toMatchObject({ guest: { cmdline: 'drover.db=10.10.0.11:7000 drover.site=10.10.0.21:80' }, dependsOn: ['db-1'], healthCheck: { kind: 'serial', pattern: 'DROVER-WEB-DB ok' } });

    const file = await fetch(`${a.manager.url}/api/v1/packages/${pkgA.id}/file`, { headers: { authorization: `Bearer ${a.manager.adminToken}` } });
    bytes = Buffer.from(await file.arrayBuffer());
    expect((await b.api<any>('POST', '/api/v1/packages/trusted-keys', { name: 'site-a', publicKey: key.publicKey })).status).toBe(201);
    const upload = await fetch(`${b.manager.url}/api/v1/packages/import/upload?wait=true`, { method: 'POST', headers: { authorization: `Bearer ${b.manager.adminToken}`, 'content-type': 'application/vnd.drover.eva+tar' }, body: bytes });
    const op = (await upload.json()) as any;
    expect(op.state, JSON.stringify(op)).toBe('done');
    pkgB = (await b.api<any>('GET', '/api/v1/packages/pair:1')).body;
    expect(pkgB.manifest).toEqual(m);
  }, 900_000);

  it('refuses data images and kernel settings that cannot apply, making nothing', async () => {
    const images = (await b.api<any>('GET', '/api/v1/images?limit=1000')).body.items;
    const ref = (file: string) => {
      const image = images.find((i: any) => i.id === pkgB.images[file]);
      return `${image.name}:${image.version}`;
    };
    const [root, data] = pkgB.manifest.vms[0].disks.map((d: any) => ref(d.file));
    const cases: Array<[string, unknown, RegExp]> = [
      ['/api/v1/vms', { name: 'x1', image: 'web', dataImages: [data] }, /dataImages do not apply to appliance image "web:/],
      ['/api/v1/vms', { name: 'x2', image: root, dataImages: ['no-such-disk'] }, /Image "no-such-disk" is not in the library/],
      ['/api/v1/vms', { name: 'x3', image: root, dataImages: ['web'] }, /Data image "web" is not a qcow2 disk image/],
      // The data disk image boots no kernel (only a package's root disks carry the appliance-kernel boot method).
      ['/api/v1/vms', { name: 'x4', image: data, cmdline: 'drover.x=1' }, /cmdline applies to appliance images only/],
      ['/api/v1/labs', { name: 'x5', manifest: { name: 'x5', networks: [], vms: [{ name: 'd', image: data, guest: { cmdline: 'drover.x=1' } }] } }, /boots its own disk .*guest.cmdline would reach nothing/],
      ['/api/v1/labs', { name: 'x6', manifest: { name: 'x6', networks: [], vms: [{ name: 'd', image: root, dataImages: ['web'] }] } }, /data image "web", which is not a qcow2 disk image/],
    ];
    for (const [route, body, message] of cases) {
      const answer = await b.api<any>('POST', route, body);
      expect(answer.status, JSON.stringify(answer.body)).toBe(400);
      expect(answer.body.error.message).toMatch(message);
    }
    expect((await b.api<any>('GET', '/api/v1/vms')).body.items).toEqual([]);
    expect((await b.api<any>('GET', '/api/v1/labs')).body.items).toEqual([]);
    // A root disk made for the appliance kernel takes kernel settings.
    const made = await b.api<any>('POST', '/api/v1/vms', { name: 'x7', image: root, dataImages: [data], cmdline: 'drover.x=1', memoryMiB: 96 });
    expect(made.status, JSON.stringify(made.body)).toBe(201);
    expect(made.body.spec).toMatchObject({ image: root, dataImages: [data], cmdline: 'drover.x=1' });
    expect((await b.api<any>('DELETE', '/api/v1/vms/x7?wait=true')).status).toBeLessThan(300);
    expect((await b.api<any>('GET', '/api/v1/vms')).body.items).toEqual([]);
  }, 120_000);

  it('deploys the package on B: its web VM serves a page built from its db VM, whose data disk came from A', async () => {
    const deploy = await runOp(b, 'POST', '/api/v1/labs', { name: 'imp', package: pkgB.id });
    imported = (await b.api<any>('GET', '/api/v1/labs/imp')).body;
    expect(imported.state).toBe('running');
    expect(imported.source).toEqual({ kind: 'package', ref: pkgB.id });
    expect(imported.vms.map((v: any) => [v.vm, v.state, v.order])).toEqual([
      ['imp-db-1', 'running', 0],
      ['imp-web-1', 'running', 1],
    ]);
    const journal = (await b.manager.store.operations.get(deploy.id)).journal.map((e) => `${e.phase} ${e.note ?? ''}`.trim());
    expect(journal.findIndex((l) => /^healthy db-1: serial/.test(l))).toBeLessThan(journal.findIndex((l) => /^start web-1$/.test(l)));
    // The db VM boots the package's root disk with the appliance kernel and has its data disk as a second disk.
    const dbVm = (await b.api<any>('GET', '/api/v1/vms/imp-db-1')).body;
    const images = (await b.api<any>('GET', '/api/v1/images?limit=1000')).body.items;
    const imageOf = (file: string) => images.find((i: any) => i.id === pkgB.images[file]);
    const [root, data] = pkgB.manifest.vms[0].disks.map((d: any) => imageOf(d.file));
    expect(dbVm.spec.image).toBe(`${root.name}:${root.version}`);
    expect(dbVm.spec.dataImages).toEqual([`${data.name}:${data.version}`]);
    // Its guest settings reached the guest: the seed key, and the web's db address moved to B's forward.
    expect(dbVm.spec.cmdline).toContain('drover.dbinit=greeting:served-by-db-1');
    const webVm = (await b.api<any>('GET', '/api/v1/vms/imp-web-1')).body;
    expect(webVm.spec.cmdline).toContain(`drover.db=10.0.2.2:${endpoint(imported, 'db-1', 7000)}`);

    // What A wrote to its data disk is what B's db holds (the seed did not run again: the key had a value).
    expect(await dbRequest(endpoint(imported, 'db-1', 7000), ['GET greeting', 'GET marker'])).toEqual(['VALUE written-on-a', 'VALUE from-site-a']);
    const web1 = await page(endpoint(imported, 'web-1', 80));
    expect(web1).toContain('<h1 id="name">imp-web-1</h1>');
    expect(web1).toContain('<span id="db-value">written-on-a</span>');
    // The web VM says so itself, reading B's db at the address its settings give (A's lab is stopped).
    await b.waitForSerial('imp-web-1', new RegExp(`DROVER-WEB-DB ok db=10\\.0\\.2\\.2:${endpoint(imported, 'db-1', 7000)} value=written-on-a`), 120_000);
    expect((await a.api<any>('GET', '/api/v1/labs/src')).body.state).toBe('stopped');
    // A package whose images a lab's VMs use (data disks included) cannot be deleted.
    const remove = await b.api<any>('DELETE', `/api/v1/packages/${pkgB.id}`);
    expect(remove.status).toBe(409);
    expect(remove.body.error.message).toMatch(/used by VM imp-db-1, imp-web-1/);
  }, 900_000);

  it('resets the imported lab to the disks it was deployed with', async () => {
    const db = () => endpoint(imported, 'db-1', 7000);
    expect(await dbRequest(db(), ['SET greeting changed-on-b', 'SET marker gone'])).toEqual(['OK', 'OK']);
    expect(await page(endpoint(imported, 'web-1', 80))).toContain('<span id="db-value">changed-on-b</span>');
    await runOp(b, 'POST', '/api/v1/labs/imp/reset', {});
    expect(await dbRequest(db(), ['GET greeting', 'GET marker'])).toEqual(['VALUE written-on-a', 'VALUE from-site-a']);
    expect(await page(endpoint(imported, 'web-1', 80))).toContain('<span id="db-value">written-on-a</span>');
  }, 900_000);

  it('clones the imported lab: the copy runs beside it without shared addresses or ports', async () => {
    await runOp(b, 'POST', '/api/v1/labs/imp/clone', { name: 'imp2' });
    const clone = (await b.api<any>('GET', '/api/v1/labs/imp2')).body;
    expect(clone.vms.map((v: any) => [v.vm, v.state])).toEqual([['imp2-db-1', 'running'], ['imp2-web-1', 'running']]);
    const addresses = (l: any) => l.vms.flatMap((v: any) => v.addresses);
    expect(addresses(clone).filter((x: string) => addresses(imported).includes(x))).toEqual([]);
    const ports = (l: any) => l.vms.flatMap((v: any) => v.endpoints.map((e: any) => e.hostPort));
    expect(ports(clone).filter((p: number) => ports(imported).includes(p))).toEqual([]);
    // The clone's data disk is the imported one too.
    expect(await dbRequest(endpoint(clone, 'db-1', 7000), ['GET greeting'])).toEqual(['VALUE written-on-a']);
    expect(await dbRequest(endpoint(clone, 'db-1', 7000), ['SET greeting the-clone'])).toEqual(['OK']);
    expect(await dbRequest(endpoint(imported, 'db-1', 7000), ['SET greeting the-original'])).toEqual(['OK']);
    expect(await page(endpoint(clone, 'web-1', 80))).toContain('<span id="db-value">the-clone</span>');
    expect(await page(endpoint(imported, 'web-1', 80))).toContain('<span id="db-value">the-original</span>');
  }, 900_000);

  it('destroys the labs on B with their data disks, and then the package can go', async () => {
    const vmIds = [...imported.vms.map((v: any) => v.vmId), ...(await b.api<any>('GET', '/api/v1/labs/imp2')).body.vms.map((v: any) => v.vmId)];
    await runOp(b, 'DELETE', '/api/v1/labs/imp');
    await runOp(b, 'DELETE', '/api/v1/labs/imp2');
    expect((await b.api<any>('GET', '/api/v1/vms')).body.items).toEqual([]);
    const volumes = (await b.api<any>('GET', '/api/v1/hosts/site-b/pools/default/volumes')).body as Array<{ name: string }>;
    expect(volumes.filter((v) => vmIds.some((id: string) => v.name.startsWith(id)))).toEqual([]);
    expect((await b.api<any>('DELETE', `/api/v1/packages/${pkgB.id}`)).status).toBe(204);
    await runOp(a, 'DELETE', '/api/v1/labs/src');
  }, 900_000);
  describe('the same file on C, deployed on Drover networks', () => {
    let lab: any;
    let bridge = '';
    let pkgC: any;

    it('deploys on its own isolated network: the web VM shows the value A wrote, read from its db over the lab network', async () => {
      expect((await c.api<any>('POST', '/api/v1/packages/trusted-keys', { name: 'site-a', publicKey: key.publicKey })).status).toBe(201);
      const upload = await fetch(`${c.manager.url}/api/v1/packages/import/upload?wait=true`, { method: 'POST', headers: { authorization: `Bearer ${c.manager.adminToken}`, 'content-type': 'application/vnd.drover.eva+tar' }, body: bytes });
      const op = (await upload.json()) as any;
      expect(op.state, JSON.stringify(op)).toBe('done');
      pkgC = (await c.api<any>('GET', '/api/v1/packages/pair:1')).body;
      expect(pkgC.manifest).toEqual(pkgB.manifest);

      await runOp(c, 'POST', '/api/v1/labs', { name: 'iso', package: pkgC.id });
      lab = (await c.api<any>('GET', '/api/v1/labs/iso')).body;
      expect(lab).toMatchObject({ state: 'running', networkMode: 'networks', source: { kind: 'package', ref: pkgC.id } });
      expect(lab.networks).toEqual([{ name: 'lan', network: 'iso-lan', kind: 'isolated', subnet: expect.stringMatching(/^10\.213\.\d+\.0\/24$/) }]);
      const prefix = labPrefix(lab);
      // No loopback forwards: the lab is reachable only over its network.
      expect(lab.vms.map((v: any) => [v.vm, v.state, v.addresses, v.endpoints])).toEqual([
        ['iso-db-1', 'running', [`${prefix}11`], []],
        ['iso-web-1', 'running', [`${prefix}21`], []],
      ]);
      expect((await c.api<any>('GET', '/api/v1/vms/iso-web-1/networks')).body.items).toMatchObject([{ network: 'iso-lan', ip: `${prefix}21`, securityGroups: ['iso-web'] }]);
      expect((await c.api<any>('GET', '/api/v1/vms/iso-db-1/networks')).body.items).toMatchObject([{ network: 'iso-lan', ip: `${prefix}11`, securityGroups: ['iso-db'] }]);
      // The db VM has the package's data disk; the web VM's settings name the db at its lab address.
      const images = (await c.api<any>('GET', '/api/v1/images?limit=1000')).body.items;
      const data = images.find((i: any) => i.id === pkgC.images[pkgC.manifest.vms[0].disks[1].file]);
      expect((await c.api<any>('GET', '/api/v1/vms/iso-db-1')).body.spec.dataImages).toEqual([`${data.name}:${data.version}`]);
      expect((await c.api<any>('GET', '/api/v1/vms/iso-web-1')).body.spec.cmdline).toContain(`drover.db=${prefix}11:7000`);
      // The db is reachable only over the lab network (its group admits the web group on port 7000):
      // the web VM's page holds what A wrote to the db's data disk.
      await expectWebShowsDb(c, [{ web: 'iso-web-1', dbAddress: `${prefix}11`, value: 'written-on-a' }]);
    }, 900_000);

    it('isolates the lab: no route in or out of its bridge, the host cannot reach it, its groups in the host firewall', async () => {
      bridge = await expectLabIsolated(c, 'iso', [`${labPrefix(lab)}21`]);
    }, 120_000);

    it('destroys the lab with its network, groups, bridge and taps, and then the package can go', async () => {
      await destroyLabAndExpectGone(c, lab, bridge);
      expect((await c.api<any>('GET', '/api/v1/vms')).body.items).toEqual([]);
      expect((await c.api<any>('DELETE', `/api/v1/packages/${pkgC.id}`)).status).toBe(204);
    }, 900_000);
  });
});
