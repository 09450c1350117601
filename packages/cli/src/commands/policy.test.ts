import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FakeManager, runCli, type RunOptions } from '../fake-manager.js';

let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-policy-'));
const P = 'example.client_v1';

beforeAll(async () => {
  manager = await new FakeManager().start();
  manager.on('PUT', /^\/api\/v1\/policy$/, async (request) => {
    const body = request.body as { document: string };
    if (body.document.includes('DOCTYPE')) return { status: 400, body: { error: { code: 'invalid', message: 'The ACM policy contains a DOCTYPE or entity declaration; DTDs and entities are refused', details: {} } } };
    return { status: 200, body: { name: P, sourceFormat: 'xml', loadedBy: 'admin', loadedAt: '2026-01-01T00:00:00.000Z', policy: { name: P, steTypes: ['a'], cwTypes: [], conflictSets: [], vmLabels: [{ name: 'dom_Fun', steTypes: ['a'], cwTypes: [] }], resourceLabels: [] } } };
  });
  manager.on('GET', /^\/api\/v1\/policy\/explain$/, async () => ({
    status: 200,
    body: {
      vm: 'fun', host: 'h1', allowed: false, policy: P, vmLabel: `ACM:${P}:dom_Fun`, hostLabel: `ACM:${P}:SystemManagement`,
      reasons: [`VM "bank" (ACM:${P}:dom_HomeBanking) counts on host "h1": its type "cw_Sensitive" and VM "fun"'s type "cw_Distrusted" are in Chinese Wall conflict set "Protection1"`],
      conflicts: [{ vm: 'bank', vmLabel: `ACM:${P}:dom_HomeBanking`, type: 'cw_Distrusted', otherType: 'cw_Sensitive', set: 'Protection1' }],
      missingSteTypes: [],
      filters: [{ filter: 'chineseWall', pass: false, reason: 'host "h1" runs VM "bank"' }],
    },
  }));
  manager.on('GET', /^\/api\/v1\/policy\/export/, async () => ({ status: 200, text: 'name: example.client_v1\n' }));
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});

function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

describe('drover policy', () => {
  it('load sends the file as the document', async () => {
    const file = path.join(configHome, 'p.xml');
    writeFileSync(file, '<SecurityPolicyDefinition/>');
    const result = await drover(['policy', 'load', file]);
    expect(result.code, result.stderr).toBe(0);
    expect(manager.requestsTo('PUT', '/api/v1/policy').at(-1)!.body).toEqual({ document: '<SecurityPolicyDefinition/>' });
    expect(result.stdout).toBe(`Loaded policy ${P}: 1 VM labels, 0 resource labels, 0 conflict sets.\n`);
  });

  it("load prints the manager's refusal with its exit code, and a missing file clearly", async () => {
    const file = path.join(configHome, 'xxe.xml');
    writeFileSync(file, '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>');
    const result = await drover(['policy', 'load', file, '--format', 'xml']);
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('DTDs and entities are refused');
    const missing = await drover(['policy', 'load', path.join(configHome, 'nope.xml')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('Cannot read policy file');
  });

  it('explain VM HOST says why not, naming the conflicting VM and types', async () => {
    const result = await drover(['policy', 'explain', 'fun', 'h1']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain(`Not allowed: VM fun (ACM:${P}:dom_Fun) on host h1`);
    expect(result.stdout).toContain('VM "bank"');
    expect(result.stdout).toContain('conflict set "Protection1"');
    const request = manager.requestsTo('GET', '/api/v1/policy/explain').at(-1)!;
    expect([request.query.get('vm'), request.query.get('host')]).toEqual(['fun', 'h1']);
  });

  it('export prints the text', async () => {
    const result = await drover(['policy', 'export', '--format', 'yaml']);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toBe('name: example.client_v1\n');
  });
});
