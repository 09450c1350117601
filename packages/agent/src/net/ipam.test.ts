import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { allocateAddress, allocateMac, checkRequestedAddress, checkSubnetFree } from './ipam.js';
import { parseIPv4 } from './firewall-model.js';

describe('IPAM', () => {
  it('allocates distinct host addresses until the subnet is full, skipping gateway and reserved', () => {
    const taken: string[] = [];
    for (let i = 0; i < 4; i++) taken.push(allocateAddress('10.9.0.0/29', taken, ['10.9.0.1', '10.9.0.3']));
    expect(taken).toEqual(['10.9.0.2', '10.9.0.4', '10.9.0.5', '10.9.0.6']);
    expect(() => allocateAddress('10.9.0.0/29', taken, ['10.9.0.1', '10.9.0.3'])).toThrow(/No free address left in subnet "10.9.0.0\/29"/);
  });

  it('never hands out an address twice nor outside the subnet (property)', () => {
    fc.assert(fc.property(fc.integer({ min: 24, max: 28 }), fc.array(fc.nat(), { maxLength: 30 }), (prefix, picks) => {
      const subnet = `10.50.0.0/${prefix}`;
      const size = 2 ** (32 - prefix);
      const taken = [...new Set(picks.map((p) => `10.50.0.${1 + (p % (size - 2))}`))];
      const address = allocateAddress(subnet, taken.slice(0, size - 3), ['10.50.0.1']);
      const value = parseIPv4(address, 'a') - parseIPv4('10.50.0.0', 'a');
      expect(taken.slice(0, size - 3)).not.toContain(address);
      expect(value).toBeGreaterThan(1);
      expect(value).toBeLessThan(size - 1);
    }));
  });

  it('checks requested static addresses', () => {
    expect(checkRequestedAddress('10.9.0.0/24', '10.9.0.20', ['10.9.0.21'])).toBe('10.9.0.20');
    expect(() => checkRequestedAddress('10.9.0.0/24', '10.9.0.21', ['10.9.0.21'])).toThrow(/already in use/);
    expect(() => checkRequestedAddress('10.9.0.0/24', '10.9.0.255', [])).toThrow(/not a host address/);
    expect(() => checkRequestedAddress('10.9.0.0/24', '10.9.1.5', [])).toThrow(/not a host address/);
  });

  it('allocates unicast MACs without collisions, even from a colliding random source', () => {
    const values = [0.5, 0.5];
    const taken: string[] = [];
    const random = () => values.shift() ?? Math.random();
    taken.push(allocateMac(taken, random));
    taken.push(allocateMac(taken, random));
    expect(taken[0]).toBe('52:54:00:80:00:00');
    expect(taken[1]).toBe('52:54:00:80:00:01');
    fc.assert(fc.property(fc.array(fc.double({ min: 0, max: 0.9999, noNaN: true }), { minLength: 1, maxLength: 50 }), (draws) => {
      const macs: string[] = [];
      for (const draw of draws) macs.push(allocateMac(macs, () => draw));
      expect(new Set(macs).size).toBe(macs.length);
      for (const mac of macs) expect(mac).toMatch(/^52:54:00(:[0-9a-f]{2}){3}$/);
    }), { numRuns: 50 });
  });

  it('refuses overlapping subnets with a clear error', () => {
    expect(() => checkSubnetFree('b', '10.1.0.0/16', [{ name: 'a', subnet: '10.1.2.0/24' }])).toThrow(/overlaps "10.1.2.0\/24" of network "a"/);
    expect(() => checkSubnetFree('b', '10.2.0.0/16', [{ name: 'a', subnet: '10.1.2.0/24' }])).not.toThrow();
    expect(() => checkSubnetFree('b', '10.2.0.1/16', [])).toThrow(DroverError);
  });
});
