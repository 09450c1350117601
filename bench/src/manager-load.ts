#!/usr/bin/env node
import http from 'node:http';
import { readFileSync } from 'node:fs';
import type { Socket } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { now, percentile } from './stats.js';

/**
 * A closed-loop HTTP load generator for the manager benchmark, run as its own
 * process (pinned to a core by manager-bench.ts): `connections` workers, each
 * on its own keep-alive connection, send a GET, read the whole answer, and send
 * the next at once. Requests started during the warm-up are not counted.
 *
 *   node manager-load.js CONFIG.json    prints one LoadResult as JSON on stdout
 */
export interface LoadConfig {
  url: string;
  token: string;
  /** Each request takes one of these paths at random. */
  paths: string[];
  connections: number;
  warmupMs: number;
  durationMs: number;
}

export interface LoadResult {
  requests: number;
  /** Answers other than 200, and failed requests. */
  errors: number;
  firstError?: string;
  seconds: number;
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  /** Mean size of an answer's body. */
  meanBytes: number;
  /** TCP connections opened, warm-up included: equals `connections` when keep-alive held. */
  socketsOpened: number;
}

export async function runLoad(config: LoadConfig): Promise<LoadResult> {
  const target = new URL(config.url);
  const agent = new http.Agent({ keepAlive: true, maxSockets: config.connections, maxFreeSockets: config.connections });
  const seen = new WeakSet<Socket>();
  let socketsOpened = 0;
  const get = (path: string) =>
    new Promise<{ status: number; bytes: number }>((resolve, reject) => {
      const request = http.request(
        { agent, host: target.hostname, port: target.port, path, method: 'GET', headers: { authorization: `Bearer ${config.token}` } },
        (response) => {
          let bytes = 0;
          response.on('data', (chunk: Buffer) => (bytes += chunk.length));
          response.on('end', () => resolve({ status: response.statusCode ?? 0, bytes }));
          response.on('error', reject);
        },
      );
      request.on('socket', (socket) => {
        if (!seen.has(socket)) {
          seen.add(socket);
          socketsOpened += 1;
        }
      });
      request.on('error', reject);
      request.end();
    });

  const latencies: number[] = [];
  let errors = 0;
  let firstError: string | undefined;
  let bytes = 0;
  const start = now();
  const measureFrom = start + config.warmupMs;
  const stopAt = measureFrom + config.durationMs;
  let lastEnd = measureFrom;
  const worker = async () => {
    while (now() < stopAt) {
      const path = config.paths[Math.floor(Math.random() * config.paths.length)]!;
      const t0 = now();
      let ok = false;
      let size = 0;
      try {
        const answer = await get(path);
        size = answer.bytes;
        ok = answer.status === 200;
        if (!ok) firstError ??= `HTTP ${answer.status} for ${path}`;
      } catch (error) {
        firstError ??= (error as Error).message;
      }
      const t1 = now();
      if (t0 < measureFrom) continue;
      latencies.push(t1 - t0);
      bytes += size;
      if (!ok) errors += 1;
      if (t1 > lastEnd) lastEnd = t1;
    }
  };
  await Promise.all(Array.from({ length: config.connections }, worker));
  agent.destroy();
  const seconds = (lastEnd - measureFrom) / 1000;
  return {
    requests: latencies.length,
    errors,
    ...(firstError ? { firstError } : {}),
    seconds,
    requestsPerSecond: latencies.length / seconds,
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    maxMs: latencies.length ? latencies.reduce((a, b) => Math.max(a, b), 0) : Number.NaN,
    meanBytes: latencies.length ? bytes / latencies.length : 0,
    socketsOpened,
  };
}

// Run as a process: the one argument is the config file.
if (process.argv[1] && fileURLToPath(import.meta.url) === path.resolve(process.argv[1]) && process.argv[2]) {
  const config = JSON.parse(readFileSync(process.argv[2], 'utf8')) as LoadConfig;
  const result = await runLoad(config);
  process.stdout.write(`${JSON.stringify(result)}\n`);
}
