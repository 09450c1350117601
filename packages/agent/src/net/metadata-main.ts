#!/usr/bin/env node
/**
 * `drover-metadata STATE.json`: the metadata service alone, for a host
 * namespace in tests and for hosts whose agent runs elsewhere. STATE.json is
 * `{ "nics": NicBinding[], "metadata": { VM: VmMetadata } }`, reread on SIGHUP.
 * Prints `READY` once listening.
 */
import { readFileSync } from 'node:fs';
import { startMetadataServer, type VmMetadata } from './metadata-server.js';
import type { NicBinding } from './firewall-model.js';

interface StateFile {
  nics: NicBinding[];
  metadata: Record<string, VmMetadata>;
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: drover-metadata STATE.json\n');
  process.exit(2);
}
let state = JSON.parse(readFileSync(file, 'utf8')) as StateFile;
process.on('SIGHUP', () => {
  state = JSON.parse(readFileSync(file, 'utf8')) as StateFile;
});
process.on('SIGTERM', () => process.exit(0));
await startMetadataServer({ nics: () => state.nics, metadata: (vm) => state.metadata[vm] });
process.stdout.write('READY\n');
