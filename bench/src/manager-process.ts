#!/usr/bin/env node
import { randomUUID } from 'node:crypto';
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

/**
 * The server side of the list benchmark, as its own process so that
 * manager-bench.ts can pin it to one core (`taskset -c 0`):
 *
 *   node manager-process.js --mode manager --data-dir D --vms 10000 --ready-file F [--hosts K]
 *     a manager on its SQLite store with that many VMs inserted (unplaced, or
 *     spread over K powered-off hosts with --hosts, so each listed VM names its host)
 *   node manager-process.js --mode fastify --body-file B --ready-file F
 *     the framework's ceiling: a bare Fastify (the manager's version) answering
 *     GET /api/v1/vms with the page in B, a static object serialized per request
 *
 * When ready it writes {url, token, pid} to the ready file (atomically), then
 * serves until killed.
 */
const { values } = parseArgs({
  options: {
    mode: { type: 'string' },
    'data-dir': { type: 'string' },
    vms: { type: 'string', default: '0' },
    hosts: { type: 'string', default: '0' },
    'body-file': { type: 'string' },
    'ready-file': { type: 'string' },
  },
});

function ready(info: { url: string; token: string }): void {
  const file = values['ready-file']!;
  writeFileSync(`${file}.tmp`, JSON.stringify({ ...info, pid: process.pid }));
  renameSync(`${file}.tmp`, file);
}

if (values.mode === 'manager') {
  // Imported here, so the Fastify baseline process does not load the manager.
  const { defaultApplianceCacheDir } = await import('@drover/appliances');
  const { defaultManagerConfig, startManager } = await import('@drover/manager');
  const manager = await startManager({
    ...defaultManagerConfig(values['data-dir']!),
    listen: '127.0.0.1:0',
    heartbeatMs: 500,
    applianceCacheDir: defaultApplianceCacheDir(),
    // The list route never reads images: no need to build the appliances here.
    appliances: false,
  });
  const vmCount = Number(values.vms);
  const hostCount = Number(values.hosts);
  const hostIds: string[] = [];
  for (let h = 0; h < hostCount; h++) {
    const host = await manager.store.hosts.create({
      name: `bench-host-${h}`,
      address: `https://127.0.0.1:${20000 + h}`,
      // Powered off: the heartbeat leaves it alone.
      state: 'powered_off',
      certSerial: randomUUID().replaceAll('-', ''),
      certFingerprint: randomUUID(),
      capacity: { cpus: 64, memoryMiB: 256 * 1024 },
    });
    hostIds.push(host.id);
  }
  const imageId = randomUUID();
  // Inserted in batches, one transaction each (one fsync per batch, not per VM).
  for (let start = 0; start < vmCount; start += 1000) {
    await manager.store.transaction(async (tx) => {
      for (let i = start; i < Math.min(vmCount, start + 1000); i++) {
        await tx.vms.create({
          name: `vm-${String(i).padStart(5, '0')}`,
          spec: {
            image: 'counter:1',
            imageId,
            cpus: 1 + (i % 4),
            memoryMiB: 128 * (1 + (i % 8)),
            antiAffinityGroups: i % 10 === 0 ? ['db'] : [],
            hostInclude: [],
            hostExclude: [],
            forwards: i % 3 === 0 ? [{ hostPort: 20000 + (i % 40000), guestPort: 80 }] : [],
            cmdline: '',
          },
          state: i % 2 ? 'stopped' : 'defined',
          ...(hostIds.length ? { hostId: hostIds[i % hostIds.length]! } : {}),
          owner: 'admin',
          labels: { tier: ['web', 'db', 'cache'][i % 3]!, team: `team-${i % 7}` },
        });
      }
    });
  }
  ready({ url: manager.url, token: manager.adminToken });
  process.on('SIGTERM', () => void manager.close().finally(() => process.exit(0)));
} else if (values.mode === 'fastify') {
  // Fastify as the manager depends on it (same version), not a dependency of the benchmarks.
  const managerRequire = createRequire(fileURLToPath(import.meta.resolve('@drover/manager')));
  interface MinimalFastify {
    get(path: string, handler: () => Promise<unknown>): void;
    listen(options: { host: string; port: number }): Promise<string>;
    close(): Promise<void>;
  }
  const Fastify = managerRequire('fastify') as (options: { logger: boolean }) => MinimalFastify;
  const page = JSON.parse(readFileSync(values['body-file']!, 'utf8')) as unknown;
  const app = Fastify({ logger: false });
  app.get('/api/v1/vms', async () => page);
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  ready({ url, token: 'none' });
  process.on('SIGTERM', () => void app.close().finally(() => process.exit(0)));
} else {
  process.stderr.write('usage: manager-process.js --mode manager|fastify ...\n');
  process.exit(2);
}
