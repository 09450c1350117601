#!/usr/bin/env node
import { rename, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { isDroverError } from '@drover/core';
import { loadManagerConfig } from './config.js';
import { startManager } from './manager.js';
import { runAdmin } from './admin.js';

const usage = `Usage: drover-manager [--config FILE] [--listen HOST:PORT] [--data-dir DIR] [--store sqlite|postgres://...] [--ready-file FILE]

Runs the Drover manager: the REST API (/api/v1), the store, the cluster CA,
placement and the operations that drive the host agents.

Options:
  --config FILE       YAML configuration (keys: listen, dataDir, store, heartbeatMs, ...)
  --listen HOST:PORT  address of the API (default 127.0.0.1:8300; port 0 picks one)
  --data-dir DIR      store file, CA, tokens, image manifests
  --store S           "sqlite" (embedded, default) or a PostgreSQL connection string
  --tls-listen IP:PORT  also serve the API over TLS there (cluster-CA certificate for IP);
                      agents on other machines join through it with --ca-fingerprint
  --ready-file FILE   once serving, write {"url","token","caFingerprint","pid"} (0600)
  -h, --help          show this help

       drover-manager admin migrate-store|backup|restore ...   (see: drover-manager admin --help)

Environment: DROVER_MANAGER_LISTEN, DROVER_MANAGER_DATA_DIR, DROVER_MANAGER_STORE,
DROVER_MANAGER_ADMIN_TOKEN, DROVER_MANAGER_LOG_LEVEL, DROVER_MANAGER_SECRET_KEY_FILE override the file.
DROVER_SECRET_KEY_FILE: the key shared by the managers of one PostgreSQL store (docs/scale-out.md).`;

async function main(): Promise<void> {
  if (process.argv[2] === 'admin') {
    process.exitCode = await runAdmin(process.argv.slice(3));
    return;
  }
  const { values } = parseArgs({
    options: {
      config: { type: 'string' },
      listen: { type: 'string' },
      'data-dir': { type: 'string' },
      store: { type: 'string' },
      'tls-listen': { type: 'string' },
      'ready-file': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    process.stdout.write(`${usage}\n`);
    return;
  }
  const config = loadManagerConfig({
    ...(values.config ? { file: values.config } : {}),
    overrides: {
      ...(values.listen ? { listen: values.listen } : {}),
      ...(values['data-dir'] ? { dataDir: values['data-dir'] } : {}),
      ...(values.store ? { store: values.store } : {}),
      ...(values['tls-listen'] ? { tlsListen: values['tls-listen'] } : {}),
    },
  });
  const manager = await startManager(config);
  if (values['ready-file']) {
    // Written whole, then renamed: a reader polling for the file never sees it half-written.
    await writeFile(`${values['ready-file']}.tmp`, JSON.stringify({ url: manager.url, ...(manager.tlsUrl ? { tlsUrl: manager.tlsUrl } : {}), token: manager.adminToken, caFingerprint: manager.caFingerprint, pid: process.pid }), { mode: 0o600 });
    await rename(`${values['ready-file']}.tmp`, values['ready-file']);
  }
  process.stderr.write(`drover-manager listening on ${manager.url}\n`);
  const stop = () => {
    // A clean close waits for connections and operations; never longer than this.
    setTimeout(() => process.exit(0), 15_000).unref();
    void manager.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

main().catch((error: unknown) => {
  process.stderr.write(`drover-manager: ${isDroverError(error) ? error.message : (error as Error).stack ?? String(error)}\n`);
  process.exit(isDroverError(error) && error.code === 'invalid' ? 2 : 1);
});
