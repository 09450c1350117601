/* eslint-disable @typescript-eslint/no-explicit-any -- the lab tests read the API's JSON answers field by field */
import { execFileSync } from 'node:child_process';
import { expect } from 'vitest';
export { dbRequest } from '@drover/appliances/testing';
import type { TestCluster } from './cluster.js';

/**
 * Shared checks of the tests that deploy a lab in `networks` mode (a Drover
 * isolated network on a bridge of the agent's host, in the root namespace):
 * labs-networks.test.ts (the shipped web-db example) and
 * labs-export-import.test.ts (a package exported on another manager).
 */

/** The host's links (`ip -o link show`), one a line. */
export function hostLinks(): string {
  return execFileSync('ip', ['-o', 'link', 'show'], { encoding: 'utf8' });
}

/** The start of the lab's network's /24 ("10.213.4."): lab addresses are the manifest's last octets on it. */
export function labPrefix(lab: any, network = 'lan'): string {
  const subnet: string = lab.networks.find((n: any) => n.name === network).subnet;
  return subnet.replace(/0\/24$/, '');
}

/**
 * Each web VM's console says its page holds `value` read from its db at `dbAddress:7000`
 * (the web appliance prints `DROVER-WEB-DB ok db=… value=…` once its own page shows a value
 * from its db). On an isolated network the db is reachable only over the lab network, so the
 * line proves the web → db path inside the lab.
 */
export async function expectWebShowsDb(cluster: TestCluster, pairs: ReadonlyArray<{ web: string; dbAddress: string; value: string }>): Promise<void> {
  for (const { web, dbAddress, value } of pairs) {
    const log = String((await cluster.api<string>('GET', `/api/v1/vms/${web}/console/serial/log`)).body);
    expect(log).toContain(`DROVER-WEB-DB ok db=${dbAddress}:7000 value=${value}`);
  }
}

/**
 * A lab of web and db VMs on its isolated network `<lab>-lan` is closed: its bridge is on the
 * host; the host firewall drops whatever would enter or leave the bridge through another
 * interface (no route in or out); the db group admits only the web group's members (`webAddresses`)
 * on port 7000; and the host itself cannot open a connection to a web VM's port 80 (its answer is
 * dropped at the bridge: only ARP, DHCP and metadata reach the host from an isolated tap).
 * Returns the bridge's name.
 */
export async function expectLabIsolated(cluster: TestCluster, labName: string, webAddresses: readonly string[]): Promise<string> {
  const network = (await cluster.api<any>('GET', `/api/v1/networks/${labName}-lan`)).body;
  expect(network).toMatchObject({ kind: 'isolated', lab: labName });
  const bridge = `dbr${network.vni}`;
  expect(hostLinks()).toContain(`${bridge}:`);
  const ruleset = execFileSync('nft', ['list', 'table', 'inet', 'drover'], { encoding: 'utf8' });
  expect(ruleset).toContain(`iifname "${bridge}" oifname != "${bridge}" drop`);
  expect(ruleset).toContain(`oifname "${bridge}" iifname != "${bridge}" drop`);
  // The db group's rule names the web group: its members' lab addresses are the allowed peers.
  const escaped = [...webAddresses].sort().map((a) => a.replaceAll('.', '\\.'));
  expect(ruleset).toMatch(new RegExp(`elements = \\{ ${escaped.join(', ')} \\}`));
  const groups = (await cluster.api<any>('GET', '/api/v1/security-groups')).body.items.filter((g: any) => g.lab === labName);
  expect(groups.map((g: any) => g.name).sort()).toEqual([`${labName}-db`, `${labName}-web`]);
  expect(groups.find((g: any) => g.name === `${labName}-db`).rules).toMatchObject([{ direction: 'ingress', protocol: 'tcp', ports: { from: 7000, to: 7000 }, group: `${labName}-web` }]);
  // From outside the lab (this host, which holds the network's gateway address) a web VM's page does not answer.
  for (const address of webAddresses) {
    // The host reaches the address over the bridge (the gateway's), never through another interface.
    expect(execFileSync('ip', ['-o', '-4', 'route', 'get', address], { encoding: 'utf8' })).toMatch(new RegExp(`dev ${bridge} `));
    const reached = await fetch(`http://${address}/health`, { signal: AbortSignal.timeout(3_000) }).then(
      (answer) => `HTTP ${answer.status}`,
      () => undefined,
    );
    expect(reached, `the host reached ${address}:80 in lab ${labName}`).toBeUndefined();
  }
  return bridge;
}

/**
 * Destroys the lab (one operation) and checks that it took its VMs, network, groups, the VMs'
 * taps and the network's bridge with it.
 */
export async function destroyLabAndExpectGone(cluster: TestCluster, lab: any, bridge: string): Promise<void> {
  const vmIds = lab.vms.map((v: any) => v.vmId as string);
  const answer = await cluster.api<any>('DELETE', `/api/v1/labs/${lab.name}`);
  expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  expect((await cluster.waitOp(answer.body.id, 600_000)).state).toBe('done');
  expect((await cluster.api<any>('GET', '/api/v1/labs')).body.items.filter((l: any) => l.name === lab.name)).toEqual([]);
  expect((await cluster.api<any>('GET', '/api/v1/vms?limit=1000')).body.items.filter((v: any) => vmIds.includes(v.id))).toEqual([]);
  for (const network of lab.networks) expect((await cluster.api<any>('GET', `/api/v1/networks/${network.network}`)).status).toBe(404);
  expect((await cluster.api<any>('GET', '/api/v1/security-groups')).body.items.filter((g: any) => g.lab === lab.name)).toEqual([]);
  const taps = vmIds.map((id: string) => `dt${id.replaceAll('-', '').slice(0, 10)}`);
  for (const tap of taps) expect(hostLinks()).not.toContain(tap);
  expect(bridge).not.toBe('');
  for (let i = 0; i < 20 && hostLinks().includes(`${bridge}:`); i++) await new Promise((r) => setTimeout(r, 250));
  expect(hostLinks()).not.toContain(`${bridge}:`);
}

/**
 * For afterAll: destroys the lab if a failed test left it (its bridge, taps and dnsmasq would
 * outlive the agent: closing a test cluster only forces its VMs off). Nothing when it is gone.
 */
export async function destroyLabIfLeft(cluster: TestCluster | undefined, name: string): Promise<void> {
  if (!cluster) return;
  const found = await cluster.api('GET', `/api/v1/labs/${name}`).catch(() => undefined);
  if (found?.status === 200) await cluster.api('DELETE', `/api/v1/labs/${name}?wait=true`).catch(() => undefined);
}

export async function page(port: number): Promise<string> {
  const answer = await fetch(`http://127.0.0.1:${port}/`, { signal: AbortSignal.timeout(10_000) });
  return answer.text();
}

/** The loopback port forwarded to `guestPort` of lab VM `vm`. */
export function endpoint(lab: any, vm: string, guestPort: number): number {
  const found = lab.vms.find((v: any) => v.name === vm)?.endpoints.find((e: any) => e.guestPort === guestPort);
  if (!found) throw new Error(`no endpoint ${vm}:${guestPort} in ${JSON.stringify(lab.vms)}`);
  return found.hostPort;
}
