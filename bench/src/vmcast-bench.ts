import { execFileSync } from 'node:child_process';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, statSync, writeSync } from 'node:fs';
import { randomFillSync } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { defaultManagerConfig, startManager, type RunningManager } from '@drover/manager';
import { report, timed } from './stats.js';

/**
 * VMcasting import throughput: a subscriber manager polls a publisher manager
 * on loopback and imports a release of `size` bytes (download over HTTP, size
 * and sha256 checked while the bytes arrive, qemu-img inspection with the
 * format forced, rename into the content-addressed store, registration), next
 * to `sha256sum` + `cp` of the same file in the same run. Target: at least
 * 0.8× their throughput, i.e. at most 1.25× their time.
 *
 * Full: 1 GiB. Smoke: 32 MiB, proves the benchmark still runs.
 */
export async function runVmcastBench(options: { smoke: boolean }): Promise<boolean> {
  const size = options.smoke ? 32 * 1024 * 1024 : 1024 * 1024 * 1024;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'drover-bench-vmcast-'));
  const managers: RunningManager[] = [];
  try {
    const importDir = path.join(dir, 'import');
    mkdirSync(importDir, { recursive: true });
    const image = path.join(importDir, 'big.qcow2');
    // Random content, so that no step (the library's own import on the publisher, which
    // converts and drops zero clusters) can make the file smaller: the release is `size`
    // bytes and more, like a full appliance disk.
    const raw = path.join(dir, 'big.raw');
    const fd = openSync(raw, 'w');
    const chunk = Buffer.alloc(16 * 1024 * 1024);
    for (let written = 0; written < size; written += chunk.length) writeSync(fd, randomFillSync(chunk));
    closeSync(fd);
    execFileSync('qemu-img', ['convert', '-q', '-f', 'raw', '-O', 'qcow2', raw, image]);
    rmSync(raw, { force: true });
    const fileBytes = statSync(image).size;

    // Baseline: sha256sum + cp of the same file.
    const baseline = await timed(async () => {
      execFileSync('sha256sum', [image], { stdio: 'ignore' });
      execFileSync('cp', [image, path.join(dir, 'copy.qcow2')]);
    });
    rmSync(path.join(dir, 'copy.qcow2'), { force: true });

    const start = async (name: string) => {
      const m = await startManager({ ...defaultManagerConfig(path.join(dir, name)), listen: '127.0.0.1:0', appliances: false, imageImportDirs: [importDir], logLevel: 'warn' }, { vmcast: { tickMs: 0 } });
      managers.push(m);
      return m;
    };
    const publisher = await start('publisher');
    const subscriber = await start('subscriber');
    const call = async (m: RunningManager, method: string, route: string, body?: unknown) => {
      const response = await fetch(`${m.url}${route}`, { method, headers: { authorization: `Bearer ${m.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
      const answer = (await response.json()) as Record<string, unknown>;
      if (response.status >= 300) throw new Error(`${method} ${route}: ${response.status} ${JSON.stringify(answer)}`);
      return answer;
    };
    // Publisher setup (not timed): the image in its library, a key, a channel, the release.
    await call(publisher, 'POST', '/api/v1/images?wait=true', { name: 'big', version: '1', source: { path: image }, format: 'qcow2' });
    const key = await call(publisher, 'POST', '/api/v1/vmcast/keys', { name: 'bench' });
    await call(publisher, 'POST', '/api/v1/vmcast/channels', { name: 'bench' });
    const release = (await call(publisher, 'POST', '/api/v1/vmcast/channels/bench/releases', { image: 'big:1' })) as { manifest: { sizeBytes?: number } };
    // What travels is the release as signed: it must be the benchmark's file, not a compacted copy.
    const releaseBytes = Number(release.manifest.sizeBytes);
    if (!(releaseBytes >= fileBytes * 0.95)) throw new Error(`the release is ${releaseBytes} bytes, the file ${fileBytes}: the benchmark would not move the file it times`);
    await call(subscriber, 'POST', '/api/v1/vmcast/subscriptions', { name: 'bench', url: `${publisher.url}/api/v1/vmcast/channels/bench/feed.rss`, pinnedKeys: [key.publicKey] });

    // Timed: one poll that finds the release, downloads, verifies, inspects and stores it.
    const imported = await timed(() => call(subscriber, 'POST', '/api/v1/vmcast/subscriptions/bench/poll', {}));
    const result = imported.value as { imported: string[]; quarantined: unknown[]; failed: unknown[] };
    if (result.imported.length !== 1) throw new Error(`the release was not imported: ${JSON.stringify(result)}`);
    const mib = fileBytes / (1024 * 1024);
    process.stdout.write(`vmcast import of ${mib.toFixed(0)} MiB: ${(mib / (imported.ms / 1000)).toFixed(1)} MiB/s; sha256sum + cp: ${(mib / (baseline.ms / 1000)).toFixed(1)} MiB/s\n`);
    const met = report({ name: 'vmcast import (download+verify+store)', figure: imported.ms, baseline: baseline.ms, baselineName: 'sha256sum+cp', unit: 'ms', maxRatio: 1.25 });
    return options.smoke ? true : met;
  } finally {
    for (const m of managers) await m.close().catch(() => undefined);
    rmSync(dir, { recursive: true, force: true });
  }
}
