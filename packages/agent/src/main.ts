#!/usr/bin/env node
import { rename, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { errors, isDroverError } from '@drover/core';
import { startAgent } from './agent.js';
import { loadAgentConfig } from './config.js';

const usage = `Usage: drover-agent [--config FILE] [--listen HOST:PORT] [--state-dir DIR] [--ready-file FILE]

Runs the Drover host agent: drives QEMU on this host and serves its HTTP API.

Options:
  --config FILE       YAML configuration (keys: listen, stateDir, hostName, qemuUser,
                      capacity.cpus, capacity.memoryMiB, cpuModels, accel, pools, ...)
  --listen HOST:PORT  address of the API (default 127.0.0.1:8301; port 0 picks one)
  --state-dir DIR     where VM records, sockets and saved states live
  --ready-file FILE   once serving, write {"url","token","pid"} as JSON to FILE (0600)
  --host-name NAME    this host's name in the cluster (default: the machine's hostname)
  --join URL          join the cluster of the manager at URL (once; the identity is kept
                      in <state-dir>/tls and the API is mutual-TLS only from then on)
  --join-token T      the one-time token from "drover host join-token"
  --ca-fingerprint F  pin the cluster CA when the manager is reached over https
  -h, --help          show this help

Environment: DROVER_AGENT_LISTEN, DROVER_AGENT_STATE_DIR, DROVER_AGENT_TOKEN,
DROVER_AGENT_ACCEL (auto|kvm|tcg), DROVER_AGENT_LOG_LEVEL, ... override the file.
QEMU processes are detached: stopping the agent leaves VMs running, and the
next start reattaches to them.`;

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      config: { type: 'string' },
      listen: { type: 'string' },
      'state-dir': { type: 'string' },
      'ready-file': { type: 'string' },
      join: { type: 'string' },
      'join-token': { type: 'string' },
      'ca-fingerprint': { type: 'string' },
      'host-name': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  const config = loadAgentConfig({
    ...(values.config ? { file: values.config } : {}),
    overrides: {
      ...(values.listen ? { listen: values.listen } : {}),
      ...(values['state-dir'] ? { stateDir: values['state-dir'] } : {}),
      ...(values['host-name'] ? { hostName: values['host-name'] } : {}),
    },
  });
  if (values.join && !values['join-token']) throw errors.invalid('--join needs --join-token (make one with "drover host join-token")');
  const agent = await startAgent(config, {
    ...(values.join ? { join: { managerUrl: values.join, token: values['join-token']!, ...(values['ca-fingerprint'] ? { caFingerprint: values['ca-fingerprint'] } : {}) } } : {}),
  });
  if (values['ready-file']) {
    // Written whole, then renamed: a reader polling for the file never sees it half-written.
    await writeFile(`${values['ready-file']}.tmp`, JSON.stringify({ url: agent.url, token: agent.token, pid: process.pid }), { mode: 0o600 });
    await rename(`${values['ready-file']}.tmp`, values['ready-file']);
  }
  process.stderr.write(`drover-agent listening on ${agent.url}\n`);
  const stop = () => {
    // A clean close waits for connections and operations; never longer than this.
    setTimeout(() => process.exit(0), 15_000).unref();
    void agent.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`drover-agent: ${isDroverError(error) ? error.message : (error as Error).stack ?? String(error)}\n`);
  process.exit(isDroverError(error) && error.code === 'invalid' ? 2 : 1);
});
