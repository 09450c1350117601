import { randomUUID } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseAccelOverride, probeAccelerator, resolveAccelerator, watchProbeBoot } from './accel.js';

const kernel = readdirSync('/boot')
  .filter((name) => /^vmlinuz-.*-cloud-amd64$/.test(name))
  .map((name) => join('/boot', name))[0] as string;

/** Pids whose command line contains `token`: a probe QEMU left behind would show up here. */
function processesWith(token: string): number[] {
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes(token)) found.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return found;
}

function probeDirs(): string[] {
  return readdirSync(tmpdir()).filter((name) => name.startsWith('drover-accel-probe-'));
}

describe('parseAccelOverride', () => {
  it('accepts auto, kvm and tcg in any case, empty meaning auto', () => {
    expect(parseAccelOverride(undefined)).toBe('auto');
    expect(parseAccelOverride('')).toBe('auto');
    expect(parseAccelOverride(' Auto ')).toBe('auto');
    expect(parseAccelOverride('KVM')).toBe('kvm');
    expect(parseAccelOverride('tcg')).toBe('tcg');
  });

  it('refuses anything else', () => {
    expect(() => parseAccelOverride('hvf')).toThrow(/Invalid accelerator "hvf"/);
  });
});

describe('probeAccelerator', () => {
  it('falls back to TCG when the probe guest never prints the expected text', async () => {
    expect(kernel).toBeDefined();
    const token = `drover-probe-${randomUUID()}`;
    const dirsBefore = probeDirs();
    const choice = await probeAccelerator({ kernel, cmdline: `console=ttyS0 ${token}`, expect: 'NEVER', timeoutMs: 3000 });
    expect(choice.accel).toBe('tcg');
    // Here KVM either aborts on MSR set-up or hangs; either way the reason says so.
    expect(choice.reason).toMatch(/exited|did not print "NEVER"|cannot be opened/);
    expect(processesWith(token)).toEqual([]);
    expect(probeDirs()).toEqual(dirsBefore);
  });

  it('uses TCG without booting anything when the KVM device cannot be opened', async () => {
    const choice = await probeAccelerator({
      kernel: '/nonexistent/kernel',
      cmdline: '',
      expect: 'x',
      kvmDevice: '/nonexistent/kvm',
    });
    expect(choice).toEqual({ accel: 'tcg', reason: '/nonexistent/kvm cannot be opened (ENOENT): using TCG' });
  });

  it('lets the configuration decide when it is not auto', async () => {
    const probe = { kernel: '/nonexistent/kernel', cmdline: '', expect: 'x' };
    expect(await resolveAccelerator('tcg', probe)).toEqual({ accel: 'tcg', reason: 'set to "tcg" by configuration' });
    expect((await resolveAccelerator('kvm', probe)).accel).toBe('kvm');
  });
});

describe('watchProbeBoot', () => {
  it('sees the expected text on the serial console of a real guest (under TCG)', async () => {
    const token = `drover-probe-${randomUUID()}`;
    const result = await watchProbeBoot({
      binary: 'qemu-system-x86_64',
      accelArgs: ['-accel', 'tcg'],
      kernel,
      cmdline: `console=ttyS0 ${token}`,
      expect: 'Linux version',
      timeoutMs: 60_000,
    });
    expect(result.outcome).toBe('found');
    expect(processesWith(token)).toEqual([]);
  });

  it('times out, kills the guest by pid and removes its directory', async () => {
    const token = `drover-probe-${randomUUID()}`;
    const dirsBefore = probeDirs();
    const result = await watchProbeBoot({
      binary: 'qemu-system-x86_64',
      accelArgs: ['-accel', 'tcg'],
      kernel,
      cmdline: `console=ttyS0 ${token}`,
      expect: 'NEVER',
      timeoutMs: 500,
    });
    expect(result).toEqual({ outcome: 'timeout' });
    expect(processesWith(token)).toEqual([]);
    expect(probeDirs()).toEqual(dirsBefore);
  });

  it('reports a QEMU that exits, with its log', async () => {
    const result = await watchProbeBoot({
      binary: 'qemu-system-x86_64',
      accelArgs: ['-accel', 'tcg'],
      kernel: '/nonexistent/kernel',
      cmdline: '',
      expect: 'NEVER',
      timeoutMs: 30_000,
    });
    expect(result).toMatchObject({ outcome: 'exited', code: 1 });
    expect(result.outcome === 'exited' && result.log).toContain('/nonexistent/kernel');
  });
});
