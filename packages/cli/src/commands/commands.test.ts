import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { closedPort, FakeManager, makeHost, runCli, type RunOptions } from '../fake-manager.js';
import type { Operation, Vm } from '../types.js';

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
let manager: FakeManager;
const configHome = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-cmd-'));

beforeAll(async () => {
  manager = await new FakeManager().start();
});
afterAll(async () => {
  await manager.close();
  rmSync(configHome, { recursive: true, force: true });
});
beforeEach(() => {
  manager.requests.length = 0;
  manager.vms.clear();
  manager.clearOverrides();
  manager.nextScript = [
    { state: 'running', phase: 'booting', progress: 40 },
    { state: 'done', phase: 'finished', progress: 100 },
  ];
});

/** drover ARGV against the fake manager, URL and token from the environment. */
function drover(argv: string[], options: RunOptions = {}) {
  return runCli(argv, { ...options, env: { DROVER_URL: manager.url, DROVER_TOKEN: manager.token, XDG_CONFIG_HOME: configHome, ...options.env } });
}

function lastRequest(method: string, path: string | RegExp) {
  const found = manager.requestsTo(method, path);
  expect(found.length).toBeGreaterThan(0);
  return found.at(-1)!;
}

describe('drover vm create', () => {
  it('turns flags into the VmCreate body, with an idempotency key', async () => {
    const result = await drover([
      'vm', 'create', 'web1', '--image', 'web:1.0', '--cpus', '2', '--memory', '1G',
      '--label', 'tier=web', '--label', 'team=ops', '--anti-affinity', 'web',
      '--forward', '8080:80', '--forward', '8443:443', '--host-include', 'h1,h2', '--host-exclude', 'h3',
      '--cmdline', 'drover.role=web', '--autostart',
    ]);
    expect(result).toMatchObject({ code: 0, stderr: '' });
    const request = lastRequest('POST', '/api/v1/vms');
    expect(request.headers['idempotency-key']).toMatch(uuid);
    expect(request.headers.authorization).toBe(`Bearer ${manager.token}`);
    expect(request.body).toEqual({
      name: 'web1',
      image: 'web:1.0',
      cpus: 2,
      memoryMiB: 1024,
      labels: { tier: 'web', team: 'ops' },
      antiAffinityGroups: ['web'],
      forwards: [
        { hostPort: 8080, guestPort: 80 },
        { hostPort: 8443, guestPort: 443 },
      ],
      hostInclude: ['h1', 'h2'],
      hostExclude: ['h3'],
      cmdline: 'drover.role=web',
      autostart: true,
    });
    expect(result.stdout).toMatch(/^Created VM web1 \([0-9a-f-]{36}\), defined\.\n$/);
  });

  it('sends only what was given, and prints the VM with --json', async () => {
    const result = await drover(['vm', 'create', 'tiny', '--image', 'web', '--memory', '256M', '--json']);
    expect(result.code).toBe(0);
    expect(lastRequest('POST', '/api/v1/vms').body).toEqual({ name: 'tiny', image: 'web', memoryMiB: 256 });
    const vm = JSON.parse(result.stdout) as Vm;
    expect(vm).toMatchObject({ name: 'tiny', state: 'defined' });
  });

  it('reads a bare memory number as MiB', async () => {
    await drover(['vm', 'create', 'bare', '--image', 'web', '--memory', '512']);
    expect(lastRequest('POST', '/api/v1/vms').body).toMatchObject({ memoryMiB: 512 });
  });

  it('refuses bad flags with exit code 2 and one line, before any request', async () => {
    const bad = await drover(['vm', 'create', 'x', '--image', 'web', '--memory', 'lots']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^drover: option '--memory <size>' argument 'lots' is invalid\. Cannot parse size "lots".* \(see "drover vm create --help"\)\n$/);
    const missing = await drover(['vm', 'create', 'x']);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('Give --image, --iso, or both');
    const forward = await drover(['vm', 'create', 'x', '--image', 'web', '--forward', '80']);
    expect(forward.code).toBe(2);
    expect(forward.stderr).toContain('HOSTPORT:GUESTPORT');
    expect(manager.requests).toHaveLength(0);
  });

  it('exits 4 with the server message on a conflict', async () => {
    manager.addVm('taken');
    const result = await drover(['vm', 'create', 'taken', '--image', 'web']);
    expect(result).toEqual({ code: 4, stdout: '', stderr: 'drover: VM "taken" already exists\n' });
  });

  it('--start starts it and waits; --json prints the VM and the operation', async () => {
    const result = await drover(['vm', 'create', 'web2', '--image', 'web', '--start', '--json']);
    expect(result.code).toBe(0);
    expect(lastRequest('POST', '/api/v1/vms/web2/start').headers['idempotency-key']).toMatch(uuid);
    const printed = JSON.parse(result.stdout) as { vm: Vm; operation: Operation };
    expect(printed.vm.name).toBe('web2');
    expect(printed.operation).toMatchObject({ kind: 'vm.start', state: 'done' });
  });
});

describe('drover vm list', () => {
  beforeEach(() => {
    manager.addVm('web1', { state: 'running', hostName: 'h1', labels: { tier: 'web' } });
    manager.addVm('db-primary', { state: 'stopped', spec: { image: 'db', cpus: 2, memoryMiB: 1024, antiAffinityGroups: [], hostInclude: [], hostExclude: [], forwards: [], cmdline: '' } });
  });

  it('prints an aligned table', async () => {
    const result = await drover(['vm', 'list']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe(
      ['NAME        STATE    HOST  CPUS  MEMORY   IMAGE', 'web1        running  h1    1     256 MiB  web', 'db-primary  stopped  -     2     1 GiB    db', ''].join('\n'),
    );
  });

  it('prints exactly one JSON document with --json (before or after the command)', async () => {
    for (const argv of [['vm', 'list', '--json'], ['--json', 'vm', 'list']]) {
      const result = await drover(argv);
      expect(result.code).toBe(0);
      const page = JSON.parse(result.stdout) as { items: Vm[] };
      expect(page.items.map((vm) => vm.name)).toEqual(['web1', 'db-primary']);
    }
  });

  it('passes the filters as query parameters', async () => {
    const result = await drover(['vm', 'ls', '--state', 'running', '--host', 'h1', '--label', 'tier=web', '--name', 'web', '--limit', '10']);
    expect(result.code).toBe(0);
    const { query } = lastRequest('GET', '/api/v1/vms');
    expect(Object.fromEntries(query)).toEqual({ state: 'running', host: 'h1', label: 'tier=web', name: 'web', limit: '10' });
    expect(result.stdout.split('\n').slice(1, -1)).toEqual([expect.stringMatching(/^web1\s+running/)]);
  });

  it('follows the cursors with --all, and says how to go on without it', async () => {
    for (let i = 0; i < 5; i += 1) manager.addVm(`extra${i}`);
    const all = await drover(['vm', 'list', '--all', '--limit', '3', '--json']);
    expect(all.code).toBe(0);
    const page = JSON.parse(all.stdout) as { items: Vm[]; next?: string };
    expect(page.items).toHaveLength(7);
    expect(page.next).toBeUndefined();
    expect(manager.requestsTo('GET', '/api/v1/vms').map((r) => r.query.get('cursor'))).toEqual([null, '3', '6']);

    const first = await drover(['vm', 'list', '--limit', '3']);
    expect(first.stdout.trim().split('\n')).toHaveLength(4);
    expect(first.stderr).toBe('More results: drover vm list --cursor 3 (or --all)\n');
  });
});

describe('errors and exit codes', () => {
  it('exits 3 on not_found with the server message, as JSON on stderr with --json', async () => {
    expect(await drover(['vm', 'show', 'nope'])).toEqual({ code: 3, stdout: '', stderr: 'drover: VM "nope" does not exist\n' });
    const json = await drover(['vm', 'show', 'nope', '--json']);
    expect(json.code).toBe(3);
    expect(json.stdout).toBe('');
    expect(JSON.parse(json.stderr)).toEqual({ error: { code: 'not_found', message: 'VM "nope" does not exist', details: {} } });
  });

  it('exits 5 when the token is refused', async () => {
    const result = await drover(['vm', 'list'], { env: { DROVER_TOKEN: 'wrong' } });
    expect(result).toMatchObject({ code: 5, stderr: 'drover: Missing or invalid API token\n' });
  });

  it('exits 6 when the manager cannot be reached', async () => {
    const result = await drover(['vm', 'list'], { env: { DROVER_URL: `http://127.0.0.1:${await closedPort()}` } });
    expect(result.code).toBe(6);
    expect(result.stderr).toMatch(/^drover: Cannot reach the manager at http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED.*\n$/);
  });

  it('maps a status without a known code (HTTP 503 from a proxy) to its class', async () => {
    manager.on('GET', /^\/api\/v1\/images$/, () => ({ status: 503, text: 'upstream down' }));
    const result = await drover(['image', 'list']);
    expect(result).toMatchObject({ code: 6, stderr: 'drover: GET /api/v1/images: HTTP 503 Service Unavailable: upstream down\n' });
  });

  it('exits 2 when there is no URL anywhere', async () => {
    const result = await runCli(['vm', 'list'], { env: { XDG_CONFIG_HOME: configHome } });
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^drover: No manager URL: pass --url, set DROVER_URL/);
  });

  it('takes --url and --token before or after the command, over the environment', async () => {
    const env = { DROVER_URL: `http://127.0.0.1:${await closedPort()}`, DROVER_TOKEN: 'wrong' };
    expect((await drover(['vm', 'list', '--url', manager.url, '--token', manager.token], { env })).code).toBe(0);
    expect((await drover(['--url', manager.url, '--token', manager.token, 'vm', 'list'], { env })).code).toBe(0);
  });

  it('treats unknown commands and a group without its subcommand as usage errors', async () => {
    const unknown = await drover(['vm', 'explode', 'x']);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toBe(`drover: unknown command 'explode' (see "drover vm --help")\n`);
    const group = await drover(['vm']);
    expect(group.code).toBe(2);
    expect(group.stderr).toContain('Usage: drover vm');
    const json = await drover(['vm', 'show', '--json']);
    expect(json.code).toBe(2);
    expect(JSON.parse(json.stderr).error).toMatchObject({ code: 'invalid', message: expect.stringContaining("missing required argument 'vm'") });
  });

  it('prints help with exit code 0', async () => {
    const help = await drover(['vm', 'stop', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('--timeout-ms <ms>');
    expect(help.stdout).toContain('$ drover vm stop web1 --force');
  });
});

describe('drover vm edit', () => {
  it('sends the changes, and If-Match with --rev', async () => {
    manager.addVm('web1', { rev: 3 });
    const result = await drover(['vm', 'edit', 'web1', '--cpus', '4', '--memory', '2G', '--no-autostart', '--rev', '3']);
    expect(result).toMatchObject({ code: 0, stdout: 'Updated VM web1 (revision 4).\n' });
    const request = lastRequest('PATCH', '/api/v1/vms/web1');
    expect(request.body).toEqual({ cpus: 4, memoryMiB: 2048, autostart: false });
    expect(request.headers['if-match']).toBe('3');
    expect(manager.requestsTo('GET', '/api/v1/vms/web1')).toHaveLength(0);
  });

  it('sends no If-Match without --rev', async () => {
    manager.addVm('web1');
    await drover(['vm', 'edit', 'web1', '--cpus', '2']);
    expect(lastRequest('PATCH', '/api/v1/vms/web1').headers['if-match']).toBeUndefined();
  });

  it('exits 4 on a stale revision', async () => {
    manager.addVm('web1', { rev: 5 });
    const result = await drover(['vm', 'edit', 'web1', '--cpus', '4', '--rev', '3']);
    expect(result).toEqual({ code: 4, stdout: '', stderr: 'drover: VM "web1" is at revision 5, not 3\n' });
  });

  it('merges labels into the current ones, pinned to the revision it read', async () => {
    manager.addVm('web1', { rev: 7, labels: { tier: 'web', old: 'yes' } });
    const result = await drover(['vm', 'edit', 'web1', '--label', 'team=ops', '--label', 'tier=front', '--remove-label', 'old']);
    expect(result.code).toBe(0);
    const request = lastRequest('PATCH', '/api/v1/vms/web1');
    expect(request.body).toEqual({ labels: { tier: 'front', team: 'ops' } });
    expect(request.headers['if-match']).toBe('7');
  });

  it('refuses an edit that changes nothing', async () => {
    manager.addVm('web1');
    const result = await drover(['vm', 'edit', 'web1']);
    expect(result.code).toBe(2);
    expect(result.stderr).toMatch(/^drover: Nothing to change/);
  });
});

describe('VM actions and operations', () => {
  beforeEach(() => {
    manager.addVm('web1');
  });

  it('waits for the operation: pending → running → done, with plain progress on a non-terminal stderr', async () => {
    const result = await drover(['vm', 'start', 'web1']);
    expect(result.code).toBe(0);
    expect(result.stdout).toBe('Started VM web1.\n');
    expect(result.stderr).toBe('start web1: pending, queued (0%)\nstart web1: running, booting (40%)\nstart web1: done, finished (100%)\n');
    const post = lastRequest('POST', '/api/v1/vms/web1/start');
    expect(post.body).toEqual({});
    expect(post.headers['idempotency-key']).toMatch(uuid);
    expect(manager.requestsTo('GET', /^\/api\/v1\/operations\//)).toHaveLength(2);
  });

  it('draws a progress bar on a terminal and prints the final operation with --json', async () => {
    const result = await drover(['vm', 'pause', 'web1', '--json'], { stderrIsTTY: true });
    expect(result.code).toBe(0);
    expect(result.stderr).toContain('\r\x1b[2Kpause web1 [##########..............]  40%  booting');
    expect(result.stderr.endsWith('\r\x1b[2K')).toBe(true);
    expect(JSON.parse(result.stdout)).toMatchObject({ kind: 'vm.pause', state: 'done', progress: 100 });
  });

  it("keeps stderr clean for scripts with --json when it is not a terminal", async () => {
    const result = await drover(['vm', 'resume', 'web1', '--json']);
    expect(result).toMatchObject({ code: 0, stderr: '' });
  });

  it("fails with the operation's error and its exit code", async () => {
    manager.nextScript = [
      { state: 'running', phase: 'placing', progress: 10 },
      { state: 'failed', phase: 'placing', progress: 10, error: { code: 'policy_denied', message: 'Chinese Wall: "bank-a" runs on every host', details: {} } },
    ];
    const result = await drover(['vm', 'start', 'web1']);
    expect(result.code).toBe(5);
    expect(result.stdout).toBe('');
    expect(result.stderr.endsWith('drover: Chinese Wall: "bank-a" runs on every host\n')).toBe(true);

    manager.nextScript = [{ state: 'failed', phase: 'booting', progress: 30, error: { code: 'timeout', message: 'The guest did not boot within 60 s', details: {} } }];
    const json = await drover(['vm', 'start', 'web1', '--json']);
    expect(json.code).toBe(7);
    expect(json.stdout).toBe('');
    expect(JSON.parse(json.stderr).error).toMatchObject({ code: 'timeout', message: 'The guest did not boot within 60 s', details: { kind: 'vm.start', state: 'failed' } });
  });

  it('--no-wait prints the operation at once', async () => {
    const human = await drover(['vm', 'reset', 'web1', '--no-wait']);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^Operation ([0-9a-f-]{36}) \(vm\.reset\) is pending; follow it with: drover op watch \1\n$/);
    const json = await drover(['vm', 'save', 'web1', '--no-wait', '--json']);
    expect(JSON.parse(json.stdout)).toMatchObject({ kind: 'vm.save', state: 'pending' });
    expect(manager.requestsTo('GET', /^\/api\/v1\/operations\//)).toHaveLength(0);
  });

  it('maps every action to its route', async () => {
    for (const action of ['start', 'pause', 'resume', 'reset', 'save', 'restore']) {
      expect((await drover(['vm', action, 'web1'])).code).toBe(0);
      expect(manager.requestsTo('POST', `/api/v1/vms/web1/${action}`)).toHaveLength(1);
    }
    expect((await drover(['vm', 'delete', 'web1'])).stdout).toBe('Deleted VM web1.\n');
    expect(lastRequest('DELETE', '/api/v1/vms/web1').headers['idempotency-key']).toMatch(uuid);
  });

  it('stop: ACPI with an optional timeout, --force powers off', async () => {
    expect((await drover(['vm', 'stop', 'web1', '--timeout-ms', '5000'])).stdout).toBe('Stopped VM web1.\n');
    expect(lastRequest('POST', '/api/v1/vms/web1/stop').body).toEqual({ timeoutMs: 5000 });
    expect((await drover(['vm', 'stop', 'web1', '--force'])).stdout).toBe('Powered off VM web1.\n');
    expect(lastRequest('POST', '/api/v1/vms/web1/force-off').body).toEqual({});
    expect((await drover(['vm', 'stop', 'web1', '--force', '--timeout-ms', '5'])).code).toBe(2);
  });

  it('snapshots: create, list, revert, delete', async () => {
    manager.snapshots.set('web1', [{ name: 'before', createdAt: '2025-01-01T00:00:00.000Z', withMemory: true }]);
    expect((await drover(['vm', 'snapshot', 'create', 'web1', 'before'])).stdout).toBe('Created snapshot before of VM web1.\n');
    expect(lastRequest('POST', '/api/v1/vms/web1/snapshots').body).toEqual({ name: 'before' });
    expect((await drover(['vm', 'snapshot', 'list', 'web1'])).stdout).toBe('NAME    CREATED                   MEMORY\nbefore  2025-01-01T00:00:00.000Z  yes\n');
    expect((await drover(['vm', 'snap', 'revert', 'web1', 'before'])).code).toBe(0);
    expect(manager.requestsTo('POST', '/api/v1/vms/web1/snapshots/before/revert')).toHaveLength(1);
    expect((await drover(['vm', 'snapshot', 'delete', 'web1', 'before'])).code).toBe(0);
    expect(manager.requestsTo('DELETE', '/api/v1/vms/web1/snapshots/before')).toHaveLength(1);
  });

  it('escapes names in paths', async () => {
    const result = await drover(['vm', 'show', '../hosts']);
    expect(result.code).toBe(3);
    expect(lastRequest('GET', /^\/api\/v1\/vms\//).path).toBe('/api/v1/vms/..%2Fhosts');
  });
});

describe('drover vm console', () => {
  beforeEach(() => {
    manager.addVm('web1');
  });

  it('prints the log once with --no-follow', async () => {
    manager.serialLog = 'Linux version 6.1\nlogin: ';
    const result = await drover(['vm', 'console', 'web1', '--no-follow']);
    expect(result).toMatchObject({ code: 0, stdout: 'Linux version 6.1\nlogin: ' });
    expect(lastRequest('GET', '/api/v1/vms/web1/console/serial/log').query.get('offset')).toBe('0');
  });

  it('follows the log from the offset the server gives back', async () => {
    manager.serialLog = 'boot\n';
    const controller = new AbortController();
    const running = drover(['vm', 'console', 'web1'], { signal: controller.signal });
    await new Promise((resolve) => setTimeout(resolve, 50));
    manager.serialLog += 'ready\n';
    await new Promise((resolve) => setTimeout(resolve, 50));
    controller.abort();
    const result = await running;
    expect(result.stdout).toBe('boot\nready\n');
    const offsets = new Set(manager.requestsTo('GET', '/api/v1/vms/web1/console/serial/log').map((r) => r.query.get('offset')));
    expect([...offsets]).toEqual(['0', '5', '11']);
  });
});

describe('drover host', () => {
  beforeAll(() => {
    manager.hosts.set('h1', makeHost('h1', { address: 'https://10.0.0.1:8400', lastHeartbeatAt: null }));
  });

  it('lists hosts as a table', async () => {
    const result = await drover(['host', 'list']);
    expect(result.stdout).toBe(
      ['NAME  STATE   ADDRESS                CPUS  MEMORY        VMS  HEARTBEAT', 'h1    online  https://10.0.0.1:8400  2/8   1 GiB/16 GiB  2    -', ''].join('\n'),
    );
  });

  it('shows, removes and rotates', async () => {
    expect((await drover(['host', 'show', 'h1'])).stdout).toMatch(/^Name: +h1\n/);
    expect((await drover(['host', 'remove', 'h1'])).stdout).toBe('Removed host h1.\n');
    expect(lastRequest('DELETE', '/api/v1/hosts/h1').headers['idempotency-key']).toMatch(uuid);
    expect((await drover(['host', 'rotate-cert', 'h1'])).stdout).toBe('Rotated the certificate of host h1.\n');
    expect(manager.requestsTo('POST', '/api/v1/hosts/h1/rotate-certificate')).toHaveLength(1);
    expect((await drover(['host', 'show', 'h9'])).code).toBe(3);
  });

  it('creates a join token and prints it with the CA fingerprint', async () => {
    const result = await drover(['host', 'join-token', '--ttl', '600']);
    expect(result.code).toBe(0);
    expect(lastRequest('POST', '/api/v1/hosts/join-tokens').body).toEqual({ ttlSeconds: 600 });
    expect(result.stdout).toContain('join-abcdef0123456789');
    expect(result.stdout).toContain('sha256:AB:CD:EF');
    const json = await drover(['host', 'join-token', '--json']);
    expect(lastRequest('POST', '/api/v1/hosts/join-tokens').body).toEqual({});
    expect(JSON.parse(json.stdout)).toEqual({ token: 'join-abcdef0123456789', expiresAt: '2030-01-01T00:00:00.000Z', caFingerprint: 'sha256:AB:CD:EF' });
    expect((await drover(['host', 'join-token', '--ttl', '5'])).code).toBe(2);
  });
});

describe('drover image and op', () => {
  it('imports an image by URL or path, and deletes one, following the operation', async () => {
    const images: Array<{ body: unknown; query: string }> = [];
    manager.on('POST', /^\/api\/v1\/images$/, (request) => {
      images.push({ body: request.body, query: request.query.toString() });
      return { status: 202, body: manager.addOperation('image.import', 'debian:1', [{ state: 'done', phase: 'done', progress: 100, result: { image: { name: 'debian', version: '1', format: 'qcow2', sizeBytes: 2 * 1024 ** 3 } } }]) };
    });
    const byUrl = await drover(['image', 'import', 'debian', '--download', 'http://127.0.0.1:1/debian.qcow2']);
    expect(byUrl).toMatchObject({ code: 0, stdout: 'Imported image debian:1 (qcow2, 2 GiB).\n' });
    expect(images[0]!.body).toEqual({ name: 'debian', source: { url: 'http://127.0.0.1:1/debian.qcow2' } });
    const byPath = await drover(['image', 'import', 'live', '--file', 'live.iso', '--format', 'iso', '--image-version', '2', '--no-wait', '--json']);
    expect(byPath.code).toBe(0);
    expect(images[1]!.body).toEqual({ name: 'live', version: '2', format: 'iso', source: { path: path.resolve('live.iso') } });
    expect(JSON.parse(byPath.stdout)).toMatchObject({ kind: 'image.import' });
    // One source, a known format: refused before any request.
    expect((await drover(['image', 'import', 'x', '--download', 'http://a/b', '--file', '/c'])).code).toBe(2);
    expect((await drover(['image', 'import', 'x'])).code).toBe(2);
    expect((await drover(['image', 'import', 'x', '--file', '/c', '--format', 'vmdk'])).code).toBe(2);
    expect(images).toHaveLength(2);

    manager.on('DELETE', /^\/api\/v1\/images\/debian(:|%3A)1$/, () => ({ status: 202, body: manager.addOperation('image.delete', 'i1', [{ state: 'done', phase: 'done', progress: 100 }]) }));
    expect(await drover(['image', 'delete', 'debian:1'])).toMatchObject({ code: 0, stdout: 'Deleted image debian:1.\n' });
  });

  it('creates VMs with an ISO, an empty disk and a cloud-init seed read from files', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-ci-'));
    try {
      const userData = path.join(dir, 'user-data');
      writeFileSync(userData, '#!/bin/sh\necho hi\n');
      await drover(['vm', 'create', 'inst', '--iso', 'netinst:12', '--disk-size', '8G', '--cloud-init-user-data', userData]);
      expect(lastRequest('POST', '/api/v1/vms').body).toEqual({ name: 'inst', iso: 'netinst:12', diskSizeBytes: 8 * 1024 ** 3, cloudInit: { userData: '#!/bin/sh\necho hi\n' } });
      await drover(['vm', 'create', 'pinned', '--image', 'debian', '--iso', 'default/tools.iso']);
      expect(lastRequest('POST', '/api/v1/vms').body).toEqual({ name: 'pinned', image: 'debian', iso: { pool: 'default', volume: 'tools.iso' } });
      const missing = await drover(['vm', 'create', 'x', '--image', 'web', '--cloud-init-user-data', path.join(dir, 'nope')]);
      expect(missing.code).toBe(2);
      expect(missing.stderr).toContain('Cannot read --cloud-init-user-data');
      manager.addVm('inst');
      manager.on('PATCH', /^\/api\/v1\/vms\/inst$/, (request) => ({ status: 200, body: { ...manager.vms.get('inst')!, echoed: request.body } }));
      await drover(['vm', 'edit', 'inst', '--remove-cloud-init']);
      expect(lastRequest('PATCH', '/api/v1/vms/inst').body).toEqual({ cloudInit: null });
      await drover(['vm', 'edit', 'inst', '--cloud-init-user-data', userData]);
      expect(lastRequest('PATCH', '/api/v1/vms/inst').body).toEqual({ cloudInit: { userData: '#!/bin/sh\necho hi\n' } });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('lists images', async () => {
    manager.images.push({ id: 'i1', name: 'web', version: '1.0', format: 'qcow2', sizeBytes: 64 * 1024 * 1024, sha256: 'ab'.repeat(32), source: 'builtin', createdAt: '2025-01-01T00:00:00Z' });
    const result = await drover(['image', 'list']);
    expect(result.stdout).toBe('NAME  VERSION  FORMAT  SIZE    SHA256        SOURCE\nweb   1.0      qcow2   64 MiB  abababababab  builtin\n');
  });

  it('lists, shows, watches and cancels operations', async () => {
    const running = manager.addOperation('vm.migrate', 'vm-7', [{ state: 'running', phase: 'perform', progress: 60 }]);
    const list = await drover(['op', 'list', '--state', 'pending']);
    expect(lastRequest('GET', '/api/v1/operations').query.get('state')).toBe('pending');
    expect(list.stdout).toMatch(/^ID\s+KIND\s+TARGET\s+STATE\s+PHASE\s+PROGRESS\s+AGE\n/);
    expect(list.stdout).toContain(running.id);
    expect((await drover(['op', 'show', running.id])).stdout).toMatch(/Kind: +vm\.migrate\n/);

    const watched = manager.addOperation('vm.migrate', 'vm-7', [
      { state: 'running', phase: 'perform', progress: 60 },
      { state: 'rolled_back', phase: 'confirm', progress: 60, error: { code: 'conflict', message: 'Destination lost during switchover; rolled back', details: {} } },
    ]);
    const watch = await drover(['op', 'watch', watched.id]);
    expect(watch.code).toBe(4);
    expect(watch.stderr.endsWith('drover: Destination lost during switchover; rolled back\n')).toBe(true);

    const cancel = await drover(['op', 'cancel', running.id, '--json']);
    expect(cancel.code).toBe(0);
    expect(lastRequest('POST', `/api/v1/operations/${running.id}/cancel`).headers['idempotency-key']).toMatch(uuid);
    expect(JSON.parse(cancel.stdout)).toMatchObject({ id: running.id, state: 'cancelled' });
    expect((await drover(['op', 'watch', '00000000-0000-0000-0000-000000000000'])).code).toBe(3);
  });
});

describe('drover config', () => {
  it('writes the file 0600 and the API commands use it at the lowest precedence', async () => {
    const home = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-xdg-'));
    try {
      const env = { XDG_CONFIG_HOME: home, DROVER_URL: '', DROVER_TOKEN: '' };
      expect((await drover(['config', 'set', 'url', manager.url], { env })).code).toBe(0);
      expect((await drover(['config', 'set', 'token', '-'], { env, stdin: `${manager.token}\n` })).code).toBe(0);
      const file = path.join(home, 'drover', 'config.yaml');
      expect(statSync(file).mode & 0o777).toBe(0o600);
      expect(readFileSync(file, 'utf8')).toBe(`url: ${manager.url}\ntoken: ${manager.token}\n`);
      expect((await drover(['vm', 'list'], { env })).code).toBe(0);
      // The environment wins over the file.
      expect((await drover(['vm', 'list'], { env: { ...env, DROVER_TOKEN: 'wrong' } })).code).toBe(5);

      const shown = await drover(['config', 'show', '--json'], { env: { ...env, DROVER_TOKEN: 'env-token-123456' } });
      expect(JSON.parse(shown.stdout)).toEqual({ file, url: manager.url, urlSource: 'file', token: 'env-…56', tokenSource: 'env' });
      expect((await drover(['config', 'set', 'colour', 'blue'], { env })).code).toBe(2);
      expect((await drover(['config', 'unset', 'token'], { env })).code).toBe(0);
      expect(readFileSync(file, 'utf8')).toBe(`url: ${manager.url}\n`);
    } finally {
      rmSync(home, { recursive: true, force: true });
    }
  });
});
