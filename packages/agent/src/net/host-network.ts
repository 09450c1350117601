import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { errors } from '@drover/core';
import { METADATA_ADDRESS, parseCidr, formatIPv4, type HostNetworkState, type NetworkSpec, type NicBinding } from './firewall-model.js';
import { applyHostFirewall, removeDroverTables } from './nft-apply.js';
import { renderRuleset, type RenderedRuleset } from './nft-render.js';

const run = promisify(execFile);

export interface HostNetworksOptions {
  /** Where dnsmasq keeps its host and lease files. */
  stateDir: string;
  /** Run every command in this network namespace (tests, benchmarks); the agent runs in its own. */
  namespace?: string;
}

interface LiveNetwork {
  spec: NetworkSpec;
  dnsmasq?: ChildProcess;
  hostsFile: string;
}

/**
 * The networks of one host: a Linux bridge per network, VM taps on it,
 * dnsmasq per network for DHCP (static leases by MAC), VXLAN to the other
 * hosts of a network, NAT, and the firewall (`applyHostFirewall`).
 *
 * `apply(state)` reconciles the host with the desired state: bad input is
 * refused before anything changes (`renderRuleset` validates), links are
 * created or removed, then the whole firewall is loaded atomically. Only
 * links this object created (or that carry the names the state gives) are
 * ever removed; the host's other interfaces and nft tables are never touched.
 */
/** The gateway's MAC of a network: locally administered unicast, the same on every host that holds the gateway. */
export function gatewayMac(spec: Pick<NetworkSpec, 'name' | 'subnet' | 'gateway'>): string {
  const digest = createHash('sha256').update(`drover-gateway:${spec.name}:${spec.subnet}:${spec.gateway}`).digest();
  return ['02', ...[...digest.subarray(0, 5)].map((b) => b.toString(16).padStart(2, '0'))].join(':');
}

export class HostNetworks {
  private readonly live = new Map<string, LiveNetwork>();
  private readonly taps = new Map<string, NicBinding>();
  private lastRuleset: RenderedRuleset | undefined;

  constructor(private readonly options: HostNetworksOptions) {
    mkdirSync(options.stateDir, { recursive: true });
  }

  /** The last ruleset loaded (for `fw explain`). */
  get ruleset(): RenderedRuleset | undefined {
    return this.lastRuleset;
  }

  async apply(state: HostNetworkState): Promise<RenderedRuleset> {
    // Validate everything first: nothing changes for bad input.
    renderRuleset(state);
    const wanted = new Map(state.networks.map((n) => [n.name, n]));
    const wantedTaps = new Map(state.nics.map((nic) => [nic.tap, nic]));
    // A network whose definition changed (it starts or stops spanning hosts, its MTU, ...) is made
    // again. Its taps stay: a running QEMU holds them open, so they are only moved to the new bridge.
    const changed = new Set([...this.live].filter(([name, live]) => JSON.stringify(wanted.get(name)) !== JSON.stringify(live.spec)).map(([name]) => name));
    for (const [tap, nic] of this.taps) {
      const want = wantedTaps.get(tap);
      if (!want || want.network !== nic.network || !wanted.has(nic.network)) await this.removeTap(tap);
    }
    for (const name of changed) await this.removeNetwork(name);
    for (const spec of state.networks) {
      if (!this.live.has(spec.name)) await this.createNetwork(spec);
      this.writeHosts(spec.name, state.nics.filter((nic) => nic.network === spec.name));
    }
    for (const nic of state.nics) {
      if (!this.taps.has(nic.tap)) await this.createTap(nic, wanted.get(nic.network)!);
      else if (changed.has(nic.network)) await this.attachTap(nic, wanted.get(nic.network)!);
      this.taps.set(nic.tap, nic);
    }
    this.lastRuleset = await applyHostFirewall(state, { namespace: this.options.namespace });
    return this.lastRuleset;
  }

  /** Removes every network, tap, dnsmasq and Drover nft table this object made. */
  async destroy(): Promise<void> {
    for (const tap of [...this.taps.keys()]) await this.removeTap(tap);
    for (const name of [...this.live.keys()]) await this.removeNetwork(name);
    await removeDroverTables({ namespace: this.options.namespace }).catch(() => undefined);
    this.lastRuleset = undefined;
  }

  /** PIDs of the dnsmasq processes, by network. */
  dnsmasqPids(): Record<string, number | undefined> {
    return Object.fromEntries([...this.live].map(([name, live]) => [name, live.dnsmasq?.pid]));
  }

  private async cmd(file: string, ...args: string[]): Promise<string> {
    const [bin, argv] = this.options.namespace === undefined ? [file, args] : ['ip', ['netns', 'exec', this.options.namespace, file, ...args]];
    try {
      const { stdout } = await run(bin, argv, { timeout: 20_000 });
      return stdout;
    } catch (error) {
      const stderr = (error as { stderr?: string }).stderr?.trim() ?? String(error);
      throw errors.unavailable(`Network command "${file} ${args.join(' ')}" failed: ${stderr}`, { command: [file, ...args] }, error);
    }
  }

  private async sysctl(key: string, value: string): Promise<void> {
    await this.cmd('sysctl', '-q', '-w', `${key}=${value}`);
  }

  private async createNetwork(spec: NetworkSpec): Promise<void> {
    const cidr = parseCidr(spec.subnet, 'subnet');
    const bridge = spec.bridge;
    const live: LiveNetwork = { spec, hostsFile: path.join(this.options.stateDir, `${spec.name}.hosts`) };
    this.live.set(spec.name, live);
    await this.cmd('ip', 'link', 'add', bridge, 'type', 'bridge');
    // The host holding the gateway gives its bridge a MAC derived from the network: a guest that
    // moves to another host (live migration) keeps a valid ARP entry for its gateway.
    if (spec.hostAddress === undefined) await this.cmd('ip', 'link', 'set', bridge, 'address', gatewayMac(spec));
    if (spec.kind === 'isolated') {
      // An IPv6 link-local address on the bridge would let guests reach host services.
      await this.sysctl(`net.ipv6.conf.${bridge.replace(/\./g, '/')}.disable_ipv6`, '1');
    }
    await this.cmd('ip', 'addr', 'add', `${spec.hostAddress ?? spec.gateway}/${cidr.prefix}`, 'dev', bridge);
    // Every network answers metadata on the link-local address (routed via the gateway).
    await this.cmd('ip', 'addr', 'add', `${METADATA_ADDRESS}/32`, 'dev', bridge);
    if (spec.mtu !== undefined && spec.vxlan === undefined) await this.cmd('ip', 'link', 'set', bridge, 'mtu', String(spec.mtu));
    await this.cmd('ip', 'link', 'set', bridge, 'up');
    if (spec.kind === 'nat') await this.sysctl('net.ipv4.ip_forward', '1');
    if (spec.kind === 'bridged' && spec.uplink !== undefined) await this.cmd('ip', 'link', 'set', spec.uplink, 'master', bridge);
    if (spec.vxlan) {
      const { vni, local, remotes, device, underlay } = spec.vxlan;
      await this.cmd('ip', 'link', 'add', device, 'type', 'vxlan', 'id', String(vni), 'dstport', '4789', 'local', local, 'nolearning', ...(underlay ? ['dev', underlay] : []));
      for (const remote of remotes) await this.cmd('bridge', 'fdb', 'append', '00:00:00:00:00:00', 'dev', device, 'dst', remote);
      if (spec.kind === 'isolated') await this.sysctl(`net.ipv6.conf.${device}.disable_ipv6`, '1');
      await this.cmd('ip', 'link', 'set', device, 'master', bridge);
      await this.cmd('ip', 'link', 'set', device, 'up');
    }
    this.writeHosts(spec.name, []);
    const mask = formatIPv4(2 ** 32 - cidr.size);
    const mtu = spec.mtu ?? (spec.vxlan ? 1450 : undefined);
    const args = [
      ...(process.env.DROVER_DEBUG_DNSMASQ ? ['--log-dhcp', '--log-facility=-'] : []), '--no-daemon', '--conf-file=/dev/null', '--port=0', `--interface=${bridge}`, '--bind-interfaces', '--except-interface=lo',
      `--dhcp-range=${formatIPv4(cidr.base)},static,${mask},1h`, `--dhcp-hostsfile=${live.hostsFile}`,
      `--dhcp-leasefile=${path.join(this.options.stateDir, `${spec.name}.leases`)}`,
      `--dhcp-option=option:router,${spec.gateway}`,
      ...(mtu === undefined ? [] : [`--dhcp-option-force=option:mtu,${mtu}`]),
    ];
    const [bin, argv] = this.options.namespace === undefined ? ['dnsmasq', args] : ['ip', ['netns', 'exec', this.options.namespace, 'dnsmasq', ...args]];
    const child = spawn(bin, argv, { stdio: ['ignore', 'ignore', 'pipe'] });
    if (process.env.DROVER_DEBUG_DNSMASQ) child.stderr?.pipe(process.stderr);
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr = (stderr + d).slice(-2000)));
    live.dnsmasq = child;
    // dnsmasq fails at once on a bad option or a taken port; wait a moment for that.
    const exited = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 300);
      child.once('exit', () => {
        clearTimeout(timer);
        resolve(true);
      });
    });
    if (exited) throw errors.unavailable(`dnsmasq for network "${spec.name}" exited: ${stderr.trim()}`, { network: spec.name });
  }

  /** Static leases: one `MAC,IP,NAME` line per NIC; dnsmasq rereads the file on SIGHUP. */
  private writeHosts(network: string, nics: NicBinding[]): void {
    const live = this.live.get(network);
    if (!live) return;
    writeFileSync(live.hostsFile, nics.map((nic) => `${nic.mac},${nic.ip},${nic.vm}\n`).join(''));
    live.dnsmasq?.kill('SIGHUP');
  }

  private async removeNetwork(name: string): Promise<void> {
    const live = this.live.get(name);
    if (!live) return;
    this.live.delete(name);
    if (live.dnsmasq && live.dnsmasq.exitCode === null) {
      const gone = new Promise((resolve) => live.dnsmasq!.once('exit', resolve));
      live.dnsmasq.kill('SIGTERM');
      await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))]);
      if (live.dnsmasq.exitCode === null) live.dnsmasq.kill('SIGKILL');
    }
    if (live.spec.kind === 'bridged' && live.spec.uplink !== undefined) await this.cmd('ip', 'link', 'set', live.spec.uplink, 'nomaster').catch(() => undefined);
    if (live.spec.vxlan) await this.cmd('ip', 'link', 'delete', live.spec.vxlan.device).catch(() => undefined);
    await this.cmd('ip', 'link', 'delete', live.spec.bridge).catch(() => undefined);
    rmSync(live.hostsFile, { force: true });
  }

  /** A persistent tap for QEMU (`-netdev tap,ifname=TAP,script=no,downscript=no`), on the network's bridge. */
  private async createTap(nic: NicBinding, spec: NetworkSpec): Promise<void> {
    await this.cmd('ip', 'tuntap', 'add', 'dev', nic.tap, 'mode', 'tap', 'vnet_hdr');
    this.taps.set(nic.tap, nic);
    await this.attachTap(nic, spec);
  }

  /** Puts a tap (new, or kept from a network made again) on the network's bridge. */
  private async attachTap(nic: NicBinding, spec: NetworkSpec): Promise<void> {
    if (spec.kind === 'isolated') await this.sysctl(`net.ipv6.conf.${nic.tap}.disable_ipv6`, '1');
    const mtu = spec.mtu ?? (spec.vxlan ? 1450 : undefined);
    if (mtu !== undefined) await this.cmd('ip', 'link', 'set', nic.tap, 'mtu', String(mtu));
    await this.cmd('ip', 'link', 'set', nic.tap, 'master', spec.bridge);
    await this.cmd('ip', 'link', 'set', nic.tap, 'up');
  }

  private async removeTap(tap: string): Promise<void> {
    this.taps.delete(tap);
    await this.cmd('ip', 'link', 'delete', tap).catch(() => undefined);
  }
}
