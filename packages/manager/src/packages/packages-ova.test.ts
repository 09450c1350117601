/* eslint-disable @typescript-eslint/no-explicit-any -- API answers are read as loose JSON in these tests */
import { execFile, execFileSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tempDir } from '@drover/agent/testing';
import type { Operation } from '@drover/api';
import { defaultManagerConfig } from '../config.js';
import { startManager, type RunningManager } from '../manager.js';

// OVAs built here with real qemu-img (streamOptimized VMDKs) and a hand-written
// OVF: a two-VM VirtualSystemCollection whose StartupSection orders them
// against their document order becomes a package in that order; a VMDK
// descriptor naming a host file and an OVA without its .ovf first are refused.

let dir: string;
let manager: RunningManager;
const raws: Record<string, string> = {};

async function api<T = any>(method: string, route: string): Promise<{ status: number; body: T }> {
  const response = await fetch(`${manager.url}${route}`, { method, headers: { authorization: `Bearer ${manager.adminToken}` } });
  const text = await response.text();
  return { status: response.status, body: (text ? JSON.parse(text) : undefined) as T };
}

async function uploadOva(file: string, query = ''): Promise<Operation> {
  const response = await fetch(`${manager.url}/api/v1/packages/import/upload?wait=true&kind=ova${query}`, { method: 'POST', headers: { authorization: `Bearer ${manager.adminToken}`, 'content-type': 'application/octet-stream' }, body: readFileSync(file) });
  const body = (await response.json()) as Operation;
  expect(response.status, JSON.stringify(body)).toBe(200);
  return body;
}

const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

function ovf(systems: string): string {
  return `<?xml version="1.0" encoding="UTF-8"?>
<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"
  xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData">
  <References>
    <File ovf:id="f-web" ovf:href="web-disk1.vmdk"/>
    <File ovf:id="f-db" ovf:href="db-disk1.vmdk"/>
  </References>
  <DiskSection>
    <Info>Virtual disks</Info>
    <Disk ovf:diskId="d-web" ovf:fileRef="f-web" ovf:capacity="2" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
    <Disk ovf:diskId="d-db" ovf:fileRef="f-db" ovf:capacity="1" ovf:capacityAllocationUnits="byte * 2^20" ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"/>
  </DiskSection>
  <NetworkSection>
    <Info>Networks</Info>
    <Network ovf:name="App Net"><Description>between web and db</Description></Network>
  </NetworkSection>
  ${systems}
</Envelope>
`;
}

function system(id: string, cpus: number, memMiB: number, disk: string): string {
  return `<VirtualSystem ovf:id="${id}">
    <Info>${id}</Info>
    <VirtualHardwareSection>
      <Info>hardware</Info>
      <Item><rasd:ElementName>${cpus} CPUs</rasd:ElementName><rasd:InstanceID>1</rasd:InstanceID><rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>${cpus}</rasd:VirtualQuantity></Item>
      <Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:ElementName>memory</rasd:ElementName><rasd:InstanceID>2</rasd:InstanceID><rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>${memMiB}</rasd:VirtualQuantity></Item>
      <Item><rasd:ElementName>disk</rasd:ElementName><rasd:HostResource>ovf:/disk/${disk}</rasd:HostResource><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceType>17</rasd:ResourceType></Item>
      <Item><rasd:Connection>App Net</rasd:Connection><rasd:ElementName>nic</rasd:ElementName><rasd:InstanceID>4</rasd:InstanceID><rasd:ResourceType>10</rasd:ResourceType></Item>
    </VirtualHardwareSection>
  </VirtualSystem>`;
}

/** A tar (ustar, as an OVA must be) of `files` from `dir`, in this order. */
function ova(name: string, files: string[]): string {
  const out = path.join(dir, name);
  execFileSync('tar', ['--format=ustar', '-cf', out, '-C', dir, ...files]);
  return out;
}

beforeAll(async () => {
  dir = tempDir('packages-ova');
  for (const [name, size] of [['web', 2], ['db', 1]] as const) {
    const raw = path.join(dir, `${name}.raw`);
    writeFileSync(raw, randomBytes(size * 1024 * 1024));
    raws[name] = raw;
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'vmdk', '-o', 'subformat=streamOptimized', raw, path.join(dir, `${name}-disk1.vmdk`)]);
  }
  // The collection lists web first, but its StartupSection starts db first (order 1), then web after 5 s.
  writeFileSync(
    path.join(dir, 'shop.ovf'),
    ovf(`<VirtualSystemCollection ovf:id="shop">
    <Info>a shop</Info>
    <StartupSection>
      <Info>start order</Info>
      <Item ovf:id="web-server" ovf:order="2" ovf:startDelay="0" ovf:waitingForGuest="true"/>
      <Item ovf:id="database" ovf:order="1" ovf:startDelay="5"/>
    </StartupSection>
    ${system('web-server', 2, 256, 'd-web')}
    ${system('database', 1, 128, 'd-db')}
  </VirtualSystemCollection>`),
  );
  const mf = ['shop.ovf', 'web-disk1.vmdk', 'db-disk1.vmdk'].map((f) => `SHA256(${f})= ${sha(readFileSync(path.join(dir, f)))}`).join('\n') + '\n';
  writeFileSync(path.join(dir, 'shop.mf'), mf);
  manager = await startManager({ ...defaultManagerConfig(path.join(dir, 'manager')), listen: '127.0.0.1:0', appliances: false }, { vmcast: { tickMs: 0 } });
}, 120_000);

afterAll(async () => {
  await manager?.close();
  if (dir) rmSync(dir, { recursive: true, force: true });
});

describe('OVA import', () => {
  it('turns a two-VM VirtualSystemCollection into a package in its StartupSection order', async () => {
    const op = await uploadOva(ova('shop.ova', ['shop.ovf', 'web-disk1.vmdk', 'db-disk1.vmdk', 'shop.mf']));
    expect(op.state, JSON.stringify(op)).toBe('done');
    const pkg = (await api('GET', '/api/v1/packages/shop:1')).body;
    expect(pkg.source).toBe('ova');
    expect(pkg.signerKeyId).toBeNull();
    expect(pkg.fileSizeBytes).toBeNull();
    const m = pkg.manifest;
    expect(m.networks).toEqual([{ name: 'App-Net', kind: 'isolated', subnet: '10.200.0.0/24' }]);
    expect(m.vms.map((v: any) => v.name)).toEqual(['database', 'web-server']);
    expect(m.vms[0]).toMatchObject({ cpus: 1, memoryMiB: 128, boot: { method: 'disk' }, nics: [{ network: 'App-Net' }], startDelaySeconds: 5 });
    expect(m.vms[0].dependsOn).toBeUndefined();
    expect(m.vms[1]).toMatchObject({ cpus: 2, memoryMiB: 256, dependsOn: ['database'] });
    // The disks are standalone qcow2 images of the library with the VMDKs' guest bytes.
    for (const [vm, raw] of [['database', raws.db!], ['web-server', raws.web!]] as const) {
      const disk = m.vms.find((v: any) => v.name === vm).disks[0];
      const image = (await api('GET', `/api/v1/images/${pkg.images[disk.file]}`)).body;
      expect(image.format).toBe('qcow2');
      const file = path.join(dir, 'manager', 'library', `${image.name}-${image.version}.qcow2`);
      const out = path.join(dir, `${vm}.check.raw`);
      execFileSync('qemu-img', ['convert', '-q', '-f', 'qcow2', '-O', 'raw', file, out]);
      expect(sha(readFileSync(out)), vm).toBe(sha(readFileSync(raw)));
    }
  }, 120_000);

  it('refuses a VMDK descriptor naming a host file, a wrong .mf checksum and an OVA whose .ovf is not first', async () => {
    // A text descriptor whose extent is a file of the host.
    writeFileSync(path.join(dir, 'evil.vmdk'), `# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\nRW 2048 FLAT "${path.join(dir, 'web.raw')}" 0\n`);
    writeFileSync(
      path.join(dir, 'evil.ovf'),
      ovf(system('evil', 1, 128, 'd-web')).replace('web-disk1.vmdk', 'evil.vmdk').replace('<File ovf:id="f-db" ovf:href="db-disk1.vmdk"/>', '').replace(/<Disk ovf:diskId="d-db"[^>]*>/, ''),
    );
    const evil = await uploadOva(ova('evil.ova', ['evil.ovf', 'evil.vmdk']), '&name=evil');
    expect(evil.state).toBe('failed');
    expect(evil.error?.message).toMatch(/^OVA "evil:1" was refused: disk "evil.vmdk" was refused as vmdk: it is not a monolithic sparse or streamOptimized VMDK/);

    writeFileSync(path.join(dir, 'bad.ovf'), readFileSync(path.join(dir, 'shop.ovf')));
    writeFileSync(path.join(dir, 'bad.mf'), `SHA256(web-disk1.vmdk)= ${'0'.repeat(64)}\n`);
    const badSum = await uploadOva(ova('bad.ova', ['bad.ovf', 'web-disk1.vmdk', 'db-disk1.vmdk', 'bad.mf']), '&name=bad');
    expect(badSum.error?.message).toMatch(/the SHA256 of "web-disk1.vmdk" is wrong/);

    const notFirst = await uploadOva(ova('late.ova', ['web-disk1.vmdk', 'shop.ovf', 'db-disk1.vmdk']), '&name=late');
    expect(notFirst.error?.message).toMatch(/first entry is "web-disk1.vmdk", not the .ovf descriptor/);

    expect((await api('GET', '/api/v1/packages')).body.items.map((p: any) => p.name)).toEqual(['shop']);
    expect((await api('GET', '/api/v1/images?limit=1000')).body.items.length).toBe(2);
  }, 120_000);

  it('is driven by the drover CLI: import-ova, list, show, delete', async () => {
    // The built CLI binary as a subprocess, against this real manager.
    const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../cli/dist/main.js');
    const drover = (argv: string[]) =>
      new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
        execFile(process.execPath, [cli, ...argv], { env: { PATH: process.env.PATH, HOME: dir, XDG_CONFIG_HOME: path.join(dir, 'xdg'), DROVER_URL: manager.url, DROVER_TOKEN: manager.adminToken }, timeout: 120_000 }, (error, stdout, stderr) =>
          resolve({ code: error ? (typeof error.code === 'number' ? error.code : -1) : 0, stdout, stderr }),
        );
      });
    const help = await drover(['package', '--help']);
    for (const sub of ['list', 'show', 'export', 'import', 'import-ova', 'download', 'delete', 'trust']) expect(help.stdout).toContain(sub);
    const imported = await drover(['package', 'import-ova', path.join(dir, 'shop.ova'), '--name', 'shop2', '--package-version', '2']);
    expect(imported.code, imported.stderr).toBe(0);
    expect(imported.stdout).toContain('Package shop2:2 (2 VMs, source ova).');
    const listed = await drover(['package', 'list']);
    expect(listed.stdout).toMatch(/shop2\s+2\s+database,web-server\s+ova/);
    const shown = await drover(['package', 'show', 'shop2']);
    expect(shown.stdout).toContain('App-Net (isolated 10.200.0.0/24)');
    expect(shown.stdout).toMatch(/web-server\s+2\s+256 MiB\s+disk\s+root:2 MiB\s+App-Net\s+database/);
    const bad = await drover(['package', 'import-ova', path.join(dir, 'late.ova'), '--name', 'late2']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/first entry is "web-disk1.vmdk", not the .ovf descriptor/);
    expect((await drover(['package', 'delete', 'shop2:2'])).code).toBe(0);
    expect((await api('GET', '/api/v1/packages')).body.items.map((p: any) => p.name)).toEqual(['shop']);
  }, 180_000);
});
