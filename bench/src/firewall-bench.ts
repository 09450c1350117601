import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { net } from '@drover/agent';
import { median, now, report } from './stats.js';

const run = promisify(execFile);

/**
 * The firewall renderer and loader (`@drover/agent` net) on 1,000 security
 * group rules for 100 VMs (100 groups of 10 rules: port ranges, ICMP types,
 * CIDRs and references to other groups; each VM in one group, on one of four
 * networks), loaded with one `nft -f` into a scratch network namespace.
 *
 * Baseline: a hand-written flat ruleset of the same rules, the way one would
 * write them without Drover: one bridge chain of anti-spoofing rules and one
 * inet forward chain with a line per (VM, rule), each matching the VM's
 * address, no per-VM chains, no dispatch maps. Figures: load time (median),
 * ruleset size in the kernel (`nft list ruleset` bytes) and rule count.
 */
export function benchState(vmCount = 100, rulesPerGroup = 10): net.HostNetworkState {
  const networks: net.NetworkSpec[] = [0, 1, 2, 3].map((n) => ({
    name: `net${n}`, kind: n === 0 ? 'isolated' : 'nat', subnet: `10.${100 + n}.0.0/16`, gateway: `10.${100 + n}.0.1`, bridge: `drbr${n}`, ...(n === 0 ? {} : { uplink: 'eth0' }),
  }));
  const groups: net.SecurityGroup[] = [];
  for (let g = 0; g < vmCount; g++) {
    const rules: net.SecurityGroupRule[] = [];
    for (let r = 0; r < rulesPerGroup; r++) {
      const kind = r % 5;
      if (kind === 0) rules.push({ direction: 'ingress', protocol: 'tcp', ports: { from: 1000 + r, to: 1000 + r }, cidr: `192.168.${g % 250}.0/24` });
      else if (kind === 1) rules.push({ direction: 'ingress', protocol: 'udp', ports: { from: 5000, to: 5100 + r }, cidr: `172.16.${r}.0/24` });
      else if (kind === 2) rules.push({ direction: 'ingress', protocol: 'icmp', icmpType: 8 });
      else if (kind === 3) rules.push({ direction: 'ingress', protocol: 'tcp', ports: { from: 80, to: 80 + r }, group: `g${(g + 1) % vmCount}` });
      else rules.push({ direction: 'egress', protocol: 'tcp', ports: { from: 443, to: 443 }, cidr: `10.${200 + (r % 50)}.0.0/16` });
    }
    groups.push({ name: `g${g}`, rules });
  }
  const nics: net.NicBinding[] = [];
  for (let v = 0; v < vmCount; v++) {
    const n = v % 4;
    nics.push({
      vm: `vm${v}`, nic: 'eth0', network: `net${n}`, tap: `dt${v}`, mac: `52:54:00:00:${(v >> 8).toString(16).padStart(2, '0')}:${(v & 255).toString(16).padStart(2, '0')}`,
      ip: `10.${100 + n}.${1 + (v >> 8)}.${10 + (v & 127)}`, groups: [`g${v}`],
    });
  }
  return { networks, groups, nics, hostRules: [] };
}

/** The same rules as one flat, hand-written ruleset. */
export function flatRuleset(state: net.HostNetworkState): { script: string; ruleCount: number } {
  const groups = new Map(state.groups.map((g) => [g.name, g]));
  const members = new Map<string, string[]>();
  for (const nic of state.nics) for (const g of nic.groups) members.set(g, [...(members.get(g) ?? []), nic.ip]);
  const bridge: string[] = [];
  const forward: string[] = ['ct state established,related accept'];
  const proto = (r: net.SecurityGroupRule): string =>
    r.protocol === 'icmp' ? (r.icmpType === undefined ? 'meta l4proto icmp' : `icmp type ${r.icmpType}`)
      : r.protocol === 'any' ? '' : r.ports ? `${r.protocol} dport ${r.ports.from}-${r.ports.to}` : `meta l4proto ${r.protocol}`;
  for (const nic of state.nics) {
    bridge.push(`iifname "${nic.tap}" ether saddr != ${nic.mac} drop`, `iifname "${nic.tap}" ip saddr != ${nic.ip} drop`, `iifname "${nic.tap}" arp saddr ip != ${nic.ip} drop`);
    for (const g of nic.groups) {
      for (const r of groups.get(g)!.rules) {
        const peers = r.cidr ? [r.cidr] : r.group ? members.get(r.group) ?? [] : [undefined];
        for (const peer of peers) {
          if (r.direction === 'ingress') forward.push(`ip daddr ${nic.ip} ${peer ? `ip saddr ${peer} ` : ''}${proto(r)} accept`);
          else forward.push(`ip saddr ${nic.ip} ${peer ? `ip daddr ${peer} ` : ''}${proto(r)} accept`);
        }
      }
    }
    forward.push(`ip daddr ${nic.ip} drop`);
  }
  const script = [
    'table bridge flat', 'delete table bridge flat', 'table inet flat', 'delete table inet flat',
    'table bridge flat {', '  chain prerouting {', '    type filter hook prerouting priority -200; policy accept;', ...bridge.map((l) => `    ${l}`), '  }', '}',
    'table inet flat {', '  chain forward {', '    type filter hook forward priority 0; policy accept;', ...forward.map((l) => `    ${l}`), '  }', '}',
  ].join('\n') + '\n';
  return { script, ruleCount: bridge.length + forward.length };
}

async function nftSize(namespace: string): Promise<number> {
  const { stdout } = await run('ip', ['netns', 'exec', namespace, 'nft', 'list', 'ruleset'], { maxBuffer: 64 << 20 });
  return stdout.length;
}

async function flushAll(namespace: string): Promise<void> {
  await run('ip', ['netns', 'exec', namespace, 'nft', 'flush', 'ruleset']);
}

export async function runFirewallBench(options: { smoke: boolean }): Promise<boolean> {
  const rounds = options.smoke ? 1 : 9;
  const namespace = `drvbenchfw${randomBytes(3).toString('hex')}`;
  await run('ip', ['netns', 'add', namespace]);
  try {
    const state = benchState();
    const ruleCount = state.groups.reduce((n, g) => n + g.rules.length, 0);
    process.stdout.write(`firewall: ${ruleCount} security group rules for ${state.nics.length} VMs, nft -f into a scratch namespace, ${rounds} round(s)\n`);
    const renderMs: number[] = [];
    const droverMs: number[] = [];
    const flatMs: number[] = [];
    let rendered: net.RenderedRuleset | undefined;
    let droverBytes = 0;
    let flatBytes = 0;
    const flat = flatRuleset(state);
    for (let i = 0; i < rounds; i++) {
      await flushAll(namespace);
      let start = now();
      rendered = net.renderRuleset(state);
      renderMs.push(now() - start);
      start = now();
      await net.loadRuleset(rendered.script, { namespace });
      droverMs.push(now() - start);
      droverBytes = await nftSize(namespace);
      await flushAll(namespace);
      start = now();
      await net.loadRuleset(flat.script, { namespace });
      flatMs.push(now() - start);
      flatBytes = await nftSize(namespace);
    }
    process.stdout.write(`  render (validate + generate): median ${median(renderMs).toFixed(1)} ms\n`);
    report({ name: 'load 1,000 rules for 100 VMs (nft -f)', figure: median(droverMs), baseline: median(flatMs), baselineName: 'flat hand-written', unit: 'ms' });
    report({ name: 'ruleset size in the kernel', figure: droverBytes, baseline: flatBytes, baselineName: 'flat hand-written', unit: 'bytes' });
    report({ name: 'rules', figure: rendered!.ruleCount, baseline: flat.ruleCount, baselineName: 'flat hand-written', unit: 'rules' });
    return true;
  } finally {
    await run('ip', ['netns', 'delete', namespace]).catch(() => undefined);
  }
}
