/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildLiveIso, defaultApplianceCacheDir } from '@drover/appliances';
import { tempDir } from '@drover/agent/testing';
import { startTestCluster, type TestCluster } from '../testing/cluster.js';

// An OVA made here (real qemu-img, streamOptimized VMDKs of the demo live
// disk, which boots from a disk by itself and prints DROVER-LIVE-OK) holding a
// two-VM VirtualSystemCollection whose StartupSection starts "database" first
// (order 1, startDelay 3 s) and "web-server" after it (order 2), against their
// document order. Imported on a manager with a real agent and deployed as a lab:
// the lab's operation and the VMs' own start operations show that order, and
// both guests boot (their consoles).

const startDelaySeconds = 3;
let dir: string;
let cluster: TestCluster;
const api = <T = any>(method: string, route: string, body?: unknown) => cluster.api<T>(method, route, body);
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function system(id: string): string {
  return `<VirtualSystem ovf:id="${id}">
    <Info>${id}</Info>
    <VirtualHardwareSection>
      <Info>hardware</Info>
      <Item><rasd:ElementName>1 CPU</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>1</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>128</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/d-${id}</rasd:HostResource><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>App Net</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>`;
}

beforeAll(async () => {
  dir = tempDir('packages-ova-deploy');
  const live = await buildLiveIso({ cacheDir: defaultApplianceCacheDir() });
  const ids = ['web-server', 'database'];
  for (const id of ids) execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', live.iso, path.join(dir, `${id}.vmdk`)]);
  const capacityMiB = Math.ceil(Number(JSON.parse(execFileSync('qemu-img', ['info', '-f', 'raw', '--output=json', live.iso], { encoding: 'utf8' }))['virtual-size']) / 1024 ** 2);
  writeFileSync(
    path.join(dir, 'shop.ovf'),
    `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>${ids.map((id) => `<File ovf:id="f-${id}" ovf:href="${id}.vmdk"/>`).join('')}</References>
  <DiskSection>
    <Info>Virtual disks</Info>
    ${ids.map((id) => `<Disk ovf:diskId="d-${id}" ovf:fileRef="f-${id}" ovf:capacity="${capacityMiB}" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>`).join('\n    ')}
  </DiskSection>
  <NetworkSection><Info>Networks</Info><Network ovf:name="App Net"><Description>between web and db</Description></Network></NetworkSection>
  <VirtualSystemCollection ovf:id="shop">
    <Info>a shop</Info>
    <StartupSection>
      <Info>start order</Info>
      <Item ovf:id="web-server" ovf:order="2" ovf:startDelay="0" ovf:waitingForGuest="true"/>
      <Item ovf:id="database" ovf:order="1" ovf:startDelay="${startDelaySeconds}"/>
    </StartupSection>
    ${ids.map(system).join('\n    ')}
  </VirtualSystemCollection>
</Envelope>
`,
  );
  const files = ['shop.ovf', ...ids.map((id) => `${id}.vmdk`)];
  writeFileSync(path.join(dir, 'shop.mf'), files.map((f) => `SHA256(${f})= ${sha(readFileSync(path.join(dir, f)))}`).join('\n') + '\n');
  execFileSync('tar', ['--format=ustar', '-cf', path.join(dir, 'shop.ova'), '-C', dir, ...files, 'shop.mf']);
  cluster = await startTestCluster({ labs: { networkMode: 'user', healthTimeoutMs: 240_000 } });
}, 300_000);

afterAll(async () => {
  try {
    await cluster?.close();
  } finally {
    if (dir) rmSync(dir, { recursive: true, force: true });
  }
});

describe('an OVA deployed as a lab', () => {
  it('starts the VirtualSystemCollection in its StartupSection order, and both VMs boot', async () => {
    const upload = await fetch(`${cluster.manager.url}/api/v1/packages/import/upload?wait=true&kind=ova`, {
      method: 'POST',
      headers: { authorization: `Bearer ${cluster.manager.adminToken}`, 'content-type': 'application/octet-stream' },
      body: readFileSync(path.join(dir, 'shop.ova')),
    });
    const imported = (await upload.json()) as any;
    expect(imported.state, JSON.stringify(imported)).toBe('done');
    const pkg = (await api('GET', '/api/v1/packages/shop:1')).body;
    expect(pkg.manifest.vms.map((v: any) => [v.name, v.boot.method, v.dependsOn ?? []])).toEqual([
      ['database', 'disk', []],
      ['web-server', 'disk', ['database']],
    ]);

    const answer = await api('POST', '/api/v1/labs', { name: 'shop', package: pkg.id });
    expect(answer.status, JSON.stringify(answer.body)).toBe(202);
    const op = await cluster.waitOp(answer.body.id, 600_000);
    expect(op.state, JSON.stringify(op)).toBe('done');
    const lab = (await api('GET', '/api/v1/labs/shop')).body;
    expect(lab.state).toBe('running');
    expect(lab.vms.map((v: any) => [v.vm, v.state, v.order])).toEqual([
      ['shop-database', 'running', 0],
      ['shop-web-server', 'running', 1],
    ]);

    // The lab's one operation: database started (and its start delay over) before web-server started.
    const journal = (await cluster.manager.store.operations.get(answer.body.id)).journal.map((e) => `${e.phase} ${e.note ?? ''}`.trim());
    const at = (entry: RegExp) => journal.findIndex((line) => entry.test(line));
    expect(at(/^start database$/), journal.join('\n')).toBeGreaterThanOrEqual(0);
    expect(at(/^start database$/)).toBeLessThan(at(/^healthy database:/));
    expect(at(/^healthy database:/)).toBeLessThan(at(/^start web-server$/));
    expect(at(/^start web-server$/)).toBeLessThan(at(/^healthy web-server:/));
    // The VMs' own start operations tell the same: web-server's began after database's ended and its delay passed.
    const starts = (await api('GET', '/api/v1/operations?limit=1000')).body.items.filter((o: any) => o.kind === 'vm.start');
    const startOf = (vm: string) => starts.find((o: any) => o.targetId === lab.vms.find((v: any) => v.name === vm).vmId);
    const db = startOf('database');
    const web = startOf('web-server');
    expect(db.state).toBe('done');
    expect(web.state).toBe('done');
    expect(Date.parse(web.createdAt)).toBeGreaterThanOrEqual(Date.parse(db.finishedAt) + startDelaySeconds * 1000);

    // Both boot their own disk (no kernel settings: an OVA VM boots by itself) and reach their console line.
    for (const vm of ['shop-database', 'shop-web-server']) {
      const record = (await api('GET', `/api/v1/vms/${vm}`)).body;
      expect(record.spec.cmdline).toBe('');
      expect(record.labels).toMatchObject({ lab: 'shop', 'ovf.id': vm.replace('shop-', '') });
      await cluster.waitForSerial(vm, /DROVER-LIVE-OK/, 180_000);
    }

    const destroy = await api('DELETE', '/api/v1/labs/shop');
    expect(destroy.status).toBe(202);
    expect((await cluster.waitOp(destroy.body.id, 600_000)).state).toBe('done');
    expect((await api('GET', '/api/v1/vms')).body.items).toEqual([]);
  }, 900_000);
});
