/**
 * Real guests on Drover networks inside network namespaces: a `web` appliance
 * on a NAT network guarded by a security group, a second guest on an isolated
 * network, clients in their own namespaces, dnsmasq for DHCP, the metadata
 * service, and the firewall loaded by `HostNetworks`. Everything is named
 * `drvnet<id>…` and removed in afterAll.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { HostNetworkState } from './firewall-model.js';
import { HostNetworks } from './host-network.js';
import { exec, ScratchNamespaces, tryExec } from './testing/scratch-netns.js';
import { TapGuest } from './testing/tap-guest.js';

const metadataMain = path.resolve(import.meta.dirname, '../../dist/net/metadata-main.js');
const spaces = new ScratchNamespaces();
const workDir = mkdtempSync(path.join(tmpdir(), 'drover-netguest-'));
let host: string;
let outside: string;
let allowed: string;
let blocked: string;
let networks: HostNetworks;
let web: TapGuest;
let lab: TapGuest;
const guests: TapGuest[] = [];

const state: HostNetworkState = {
  networks: [
    { name: 'pub', kind: 'nat', subnet: '10.231.10.0/24', gateway: '10.231.10.1', bridge: 'drbr-pub', uplink: 'up0' },
    { name: 'lab', kind: 'isolated', subnet: '10.231.20.0/24', gateway: '10.231.20.1', bridge: 'drbr-lab' },
  ],
  groups: [{ name: 'web', rules: [
    { direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 }, cidr: '10.231.2.0/24' },
    { direction: 'ingress', protocol: 'icmp', icmpType: 8, cidr: '10.231.2.0/24' },
  ] }],
  nics: [
    { vm: 'web-1', nic: 'eth0', network: 'pub', tap: 'dtweb1', mac: '52:54:00:e7:00:01', ip: '10.231.10.10', groups: ['web'] },
    { vm: 'lab-1', nic: 'eth0', network: 'lab', tap: 'dtlab1', mac: '52:54:00:e7:00:02', ip: '10.231.20.10', groups: [] },
  ],
  hostRules: [],
};

/** busybox httpd serving one file, in a namespace, killed by PID in afterAll. */
async function httpd(namespace: string, port: number, body: string): Promise<void> {
  const dir = path.join(workDir, `www-${port}-${namespace}`);
  mkdirSync(dir, { recursive: true });
  writeFileSync(path.join(dir, 'index.html'), body);
  const child = spawn('ip', ['netns', 'exec', namespace, 'busybox', 'httpd', '-f', '-p', String(port), '-h', dir], { stdio: 'ignore' });
  spaces.track(child.pid);
  await new Promise((r) => setTimeout(r, 300));
}

const curl = (namespace: string, url: string) => tryExec(namespace, 'curl', '-s', '-m', '4', url);

beforeAll(async () => {
  if (!existsSync(metadataMain)) throw new Error(`${metadataMain} is missing: run "npx tsc -b" first`);
  host = await spaces.create('h');
  outside = await spaces.create('o');
  allowed = await spaces.create('a');
  blocked = await spaces.create('b');
  await spaces.link(host, 'up0', '10.231.1.1/24', outside, 'eth0', '10.231.1.2/24');
  await spaces.link(host, 'ca', '10.231.2.1/24', allowed, 'eth0', '10.231.2.2/24');
  await spaces.link(host, 'cb', '10.231.3.1/24', blocked, 'eth0', '10.231.3.2/24');
  for (const [ns, gw] of [[outside, '10.231.1.1'], [allowed, '10.231.2.1'], [blocked, '10.231.3.1']] as const) await exec(ns, 'ip', 'route', 'add', 'default', 'via', gw);
  await httpd(outside, 8080, 'outside-ok\n');
  await httpd(host, 8081, 'host-secret\n');

  networks = new HostNetworks({ stateDir: path.join(workDir, 'net'), namespace: host });
  await networks.apply(state);
  for (const pid of Object.values(networks.dnsmasqPids())) spaces.track(pid);

  const metadataState = path.join(workDir, 'metadata.json');
  writeFileSync(metadataState, JSON.stringify({
    nics: state.nics,
    metadata: {
      'web-1': { instanceId: 'i-web-1', hostname: 'web-1', userData: '#cloud-config\n', settings: { updateChannel: 'stable' } },
      'lab-1': { instanceId: 'i-lab-1', hostname: 'lab-1', settings: { lab: 'pentest-101' } },
    },
  }));
  const metadata = spawn('ip', ['netns', 'exec', host, process.execPath, metadataMain, metadataState], { stdio: ['ignore', 'pipe', 'inherit'] });
  spaces.track(metadata.pid);
  await new Promise<void>((resolve, reject) => {
    metadata.stdout.setEncoding('utf8').on('data', (d: string) => d.includes('READY') && resolve());
    metadata.once('exit', (code) => reject(new Error(`metadata service exited with ${code}`)));
  });

  web = await TapGuest.start({ name: 'web-1', namespace: host, workDir, tap: 'dtweb1', mac: '52:54:00:e7:00:01' });
  guests.push(web);
  spaces.track(web.pid);
  lab = await TapGuest.start({ name: 'lab-1', namespace: host, workDir, tap: 'dtlab1', mac: '52:54:00:e7:00:02' });
  guests.push(lab);
  spaces.track(lab.pid);
  await Promise.all([web.ready(), lab.ready()]);
}, 600_000);

afterAll(async () => {
  for (const guest of guests) guest.kill();
  await networks?.destroy().catch(() => undefined);
  await spaces.destroy();
  rmSync(workDir, { recursive: true, force: true });
});

describe('guests on Drover networks', () => {
  it('hands each guest its static lease by DHCP', async () => {
    expect((await web.sh('cat /run/drover/dhcp-eth0')).out).toContain('10.231.10.10/24');
    expect((await lab.sh('cat /run/drover/dhcp-eth0')).out).toContain('10.231.20.10/24');
  });

  it('serves the web appliance to the allowed source only', async () => {
    const ok = await curl(allowed, 'http://10.231.10.10/health');
    expect(ok.ok).toBe(true);
    expect(ok.stdout).toBe('ok\n');
    expect((await curl(blocked, 'http://10.231.10.10/health')).ok).toBe(false);
    expect((await tryExec(allowed, 'busybox', 'ping', '-c', '1', '-W', '2', '10.231.10.10')).ok).toBe(true);
    expect((await tryExec(blocked, 'busybox', 'ping', '-c', '1', '-W', '2', '10.231.10.10')).ok).toBe(false);
  });

  it('lets the NAT guest reach the outside namespace, replies included', async () => {
    const reply = await web.fetch('http://10.231.1.2:8080/');
    expect(reply).toEqual({ ok: true, body: expect.stringContaining('outside-ok') });
  });

  it('lets the NAT guest reach nothing of the host but DHCP and metadata', async () => {
    expect((await web.fetch('http://10.231.10.1:8081/')).ok).toBe(false);
    expect((await web.fetch('http://10.231.1.1:8081/')).ok).toBe(false);
    expect((await web.sh('ping -c 1 -W 2 10.231.10.1')).status).not.toBe(0);
    const meta = await web.fetch('http://169.254.169.254/meta-data');
    expect(meta.ok).toBe(true);
    expect(meta.body).toContain('instance-id: i-web-1');
  });

  it('keeps the isolated guest inside its network: no outside, no host, no other network, no IPv6', async () => {
    expect((await lab.fetch('http://10.231.1.2:8080/')).ok).toBe(false);
    expect((await lab.fetch('http://10.231.20.1:8081/')).ok).toBe(false);
    expect((await lab.fetch('http://10.231.10.10/health')).ok).toBe(false);
    expect((await lab.sh('ping -c 1 -W 2 10.231.20.1')).status).not.toBe(0);
    // IPv6: nothing on the host side has an address, and no host answers the all-nodes group.
    expect(await exec(host, 'sysctl', '-n', 'net.ipv6.conf.drbr-lab.disable_ipv6')).toBe('1\n');
    expect(await exec(host, 'sysctl', '-n', 'net.ipv6.conf.dtlab1.disable_ipv6')).toBe('1\n');
    expect(await exec(host, 'ip', '-6', 'addr', 'show', 'dev', 'drbr-lab')).toBe('');
    const own = (await lab.sh("ip -6 addr show dev eth0 | grep -o 'fe80::[0-9a-f:]*' | head -1")).out.trim();
    const ping6 = await lab.sh('ping -6 -c 2 -W 2 ff02::1%eth0 2>&1');
    const responders = [...ping6.out.matchAll(/bytes from ([0-9a-f:]+)/g)].map((m) => m[1]).filter((a) => a !== own);
    expect(responders).toEqual([]);
  });

  it('answers each guest with its own configuration on the metadata address', async () => {
    const labMeta = await lab.fetch('http://169.254.169.254/drover.json');
    expect(labMeta.ok).toBe(true);
    expect(JSON.parse(labMeta.body)).toMatchObject({ vm: 'lab-1', ip: '10.231.20.10', lab: 'pentest-101' });
    const webMeta = await web.fetch('http://169.254.169.254/drover.json');
    expect(JSON.parse(webMeta.body)).toMatchObject({ vm: 'web-1', updateChannel: 'stable' });
    // Not a VM: a client that reaches the address through the host gets nothing.
    const stranger = await tryExec(allowed, 'curl', '-s', '-m', '4', '-w', '%{http_code}', '-o', '/dev/null', 'http://169.254.169.254/meta-data');
    expect(stranger.stdout).toBe('403');
  });

  it('cuts off a guest that spoofs its IP address, and heals when it is restored', async () => {
    await web.sh('ip addr flush dev eth0; ip addr add 10.231.10.50/24 dev eth0; ip route add default via 10.231.10.1');
    expect((await web.fetch('http://10.231.1.2:8080/')).ok).toBe(false);
    expect((await curl(allowed, 'http://10.231.10.50/health')).ok).toBe(false);
    await web.sh('ip addr flush dev eth0; ip addr add 10.231.10.10/24 dev eth0; ip route add default via 10.231.10.1');
    expect((await web.fetch('http://10.231.1.2:8080/')).ok).toBe(true);
  });

  it('cuts off a guest that spoofs its MAC address, and heals when it is restored', async () => {
    await web.sh('ip link set eth0 address 52:54:00:e7:00:99');
    expect((await web.fetch('http://10.231.1.2:8080/')).ok).toBe(false);
    await web.sh('ip link set eth0 address 52:54:00:e7:00:01; ip route add default via 10.231.10.1 2>/dev/null; true');
    expect((await web.fetch('http://10.231.1.2:8080/')).ok).toBe(true);
  });
});
