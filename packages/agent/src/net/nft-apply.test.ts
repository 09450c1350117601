import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DroverError } from '@drover/core';
import { applyHostFirewall, listDroverTables, loadRuleset, removeDroverTables } from './nft-apply.js';
import { renderRuleset } from './nft-render.js';
import { exec, ScratchNamespaces } from './testing/scratch-netns.js';
import { labState } from './testing/fixtures.js';

const spaces = new ScratchNamespaces();
let ns: string;

beforeAll(async () => {
  ns = await spaces.create('fw');
  // A table that is not Drover's: it must survive everything below.
  await exec(ns, 'nft', 'add', 'table', 'inet', 'other');
  await exec(ns, 'nft', 'add', 'chain', 'inet', 'other', 'keep');
});
afterAll(() => spaces.destroy());

describe('applyHostFirewall (real nft in a namespace)', () => {
  it('loads the rendered tables and replaces them whole on the next apply', async () => {
    await applyHostFirewall(labState, { namespace: ns });
    const first = await listDroverTables({ namespace: ns });
    expect(first).toContain('jump port_3');
    expect(first).toContain('masquerade');
    const smaller = structuredClone(labState);
    smaller.nics = smaller.nics.slice(0, 1);
    await applyHostFirewall(smaller, { namespace: ns });
    const second = await listDroverTables({ namespace: ns });
    // No stale chains or set elements from the first load.
    expect(second).not.toContain('port_3');
    expect(second).not.toContain('10.77.2.10');
    expect(await exec(ns, 'nft', 'list', 'table', 'inet', 'other')).toContain('chain keep');
  });

  it('leaves the previous rules byte-identical when the kernel refuses the new script', async () => {
    await applyHostFirewall(labState, { namespace: ns });
    const before = await exec(ns, 'nft', 'list', 'ruleset');
    const { script } = renderRuleset({ ...labState, nics: [] });
    const broken = `${script}add rule inet drover forward ip saddr @no_such_set drop\n`;
    await expect(loadRuleset(broken, { namespace: ns })).rejects.toThrow(/nft refused the ruleset/);
    expect(await exec(ns, 'nft', 'list', 'ruleset')).toBe(before);
  });

  it('applies nothing for invalid input', async () => {
    const before = await exec(ns, 'nft', 'list', 'ruleset');
    const bad = structuredClone(labState);
    bad.groups[0]!.rules[0]!.ports = { from: 100, to: 10 };
    await expect(applyHostFirewall(bad, { namespace: ns })).rejects.toBeInstanceOf(DroverError);
    expect(await exec(ns, 'nft', 'list', 'ruleset')).toBe(before);
  });

  it('removes only Drover tables', async () => {
    await removeDroverTables({ namespace: ns });
    const ruleset = await exec(ns, 'nft', 'list', 'ruleset');
    expect(ruleset).not.toContain('drover');
    expect(ruleset).toContain('table inet other');
  });
});
