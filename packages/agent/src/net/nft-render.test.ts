import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { renderRuleset } from './nft-render.js';
import type { HostNetworkState } from './firewall-model.js';
import { labState } from './testing/fixtures.js';

const goldenDir = path.join(import.meta.dirname, 'golden');

/** Compares with `golden/NAME.nft`; `DROVER_UPDATE_GOLDEN=1` rewrites it (review the diff). */
function expectGolden(name: string, script: string): void {
  const file = path.join(goldenDir, `${name}.nft`);
  if (process.env.DROVER_UPDATE_GOLDEN === '1') writeFileSync(file, script);
  expect(script).toBe(readFileSync(file, 'utf8'));
}


function withChange(change: (state: HostNetworkState) => void): HostNetworkState {
  const copy = structuredClone(labState);
  change(copy);
  return copy;
}

function invalid(state: HostNetworkState, message: RegExp): void {
  let caught: unknown;
  try {
    renderRuleset(state);
  } catch (error) {
    caught = error;
  }
  expect(caught).toBeInstanceOf(DroverError);
  expect((caught as DroverError).code).toBe('invalid');
  expect((caught as DroverError).message).toMatch(message);
}

describe('renderRuleset', () => {
  it('renders isolated, NAT and bridged networks with groups, group references, host rules (golden)', () => {
    const { script, ruleCount } = renderRuleset(labState);
    expectGolden('lab-nat-bridged', script);
    expect(ruleCount).toBeGreaterThan(30);
  });

  it('renders an empty host: only the empty Drover tables (golden)', () => {
    expectGolden('empty', renderRuleset({ networks: [], groups: [], nics: [], hostRules: [] }).script);
  });

  it('renders a NIC without groups on an isolated network as default deny inbound (golden)', () => {
    expectGolden('isolated-no-groups', renderRuleset({
      networks: [{ name: 'lab', kind: 'isolated', subnet: '10.77.1.0/24', gateway: '10.77.1.1', bridge: 'drbr-lab' }],
      groups: [],
      nics: [{ vm: 'kali', nic: 'eth0', network: 'lab', tap: 'dt9', mac: '52:54:00:00:00:09', ip: '10.77.1.9', groups: [] }],
      hostRules: [],
    }).script);
  });

  it('is deterministic whatever the input order of NICs', () => {
    const reversed = withChange((s) => s.nics.reverse());
    expect(renderRuleset(reversed).script).toBe(renderRuleset(labState).script);
  });

  it('refuses impossible port ranges and ports on the wrong protocol', () => {
    invalid(withChange((s) => (s.groups[0]!.rules[0]!.ports = { from: 90, to: 80 })), /port range 90-80 .*start is after the end/);
    invalid(withChange((s) => (s.groups[0]!.rules[0]!.ports = { from: 0, to: 80 })), /Invalid port 0/);
    invalid(withChange((s) => (s.groups[0]!.rules[0]!.ports = { from: 1, to: 70000 })), /Invalid port 70000/);
    invalid(withChange((s) => { s.groups[0]!.rules[2]!.icmpType = 300; }), /ICMP type 300/);
    invalid(withChange((s) => { s.groups[0]!.rules[2]!.protocol = 'icmp'; s.groups[0]!.rules[2]!.ports = { from: 1, to: 2 }; }), /ports need protocol tcp or udp/);
  });

  it('refuses a group that refers to itself or to a missing group', () => {
    invalid(withChange((s) => (s.groups[0]!.rules[1]!.group = 'web')), /security group cannot refer to itself/);
    invalid(withChange((s) => (s.groups[0]!.rules[1]!.group = 'nobody')), /"nobody" does not exist/);
  });

  it('refuses names that would inject into nft syntax', () => {
    invalid(withChange((s) => (s.groups[0]!.name = 'web"; flush ruleset; #')), /Invalid security group name/);
    invalid(withChange((s) => (s.nics[0]!.tap = 'dt1" drop')), /Invalid tap/);
    invalid(withChange((s) => (s.nics[0]!.vm = 'a\nb')), /Invalid VM name/);
    invalid(withChange((s) => (s.networks[0]!.bridge = 'br}')), /Invalid bridge/);
    invalid(withChange((s) => (s.nics[0]!.mac = '52:54:00:00:00:01 }')), /Invalid MAC/);
    invalid(withChange((s) => (s.nics[0]!.ip = '10.77.1.10; flush')), /Invalid NIC address/);
    invalid(withChange((s) => (s.groups[0]!.rules[0]!.cidr = '10.0.0.0/8 accept')), /Invalid cidr/);
  });

  it('refuses overlapping subnets and addresses outside or reused', () => {
    invalid(withChange((s) => (s.networks[1]!.subnet = '10.77.0.0/16')), /overlaps "10.77.1.0\/24" of network "lab"/);
    invalid(withChange((s) => (s.nics[0]!.ip = '10.77.2.10')), /not a host address of 10.77.1.0\/24/);
    invalid(withChange((s) => (s.nics[1]!.mac = '52:54:00:00:00:01')), /used twice/);
    invalid(withChange((s) => (s.nics[0]!.ip = '10.77.1.1')), /is the gateway/);
    invalid(withChange((s) => (s.networks[0]!.subnet = '10.77.1.5/24')), /host bits are set/);
    invalid(withChange((s) => (s.nics[0]!.network = 'nowhere')), /does not have/);
  });
});
