#!/usr/bin/env node
/**
 * `drover-metadata STATE.json [--packages DIR]`: the metadata service alone, for a host
 * namespace in tests and for hosts whose agent runs elsewhere; with
 * `--packages`, guests' package updates from an agent's package directory
 * (`<agent state>/packages`, see guest-packages.ts). STATE.json is
 * `{ "nics": NicBinding[], "metadata": { VM: VmMetadata } }`, reread on SIGHUP.
 * Prints `READY` once listening.
 */
import { readFileSync } from 'node:fs';
import { startMetadataServer, type VmMetadata } from './metadata-server.js';
import { GuestPackageStore } from './guest-packages.js';
import type { NicBinding } from './firewall-model.js';

interface StateFile {
  nics: NicBinding[];
  metadata: Record<string, VmMetadata>;
}

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: drover-metadata STATE.json [--packages DIR]\n');
  process.exit(2);
}
let state = JSON.parse(readFileSync(file, 'utf8')) as StateFile;
process.on('SIGHUP', () => {
  state = JSON.parse(readFileSync(file, 'utf8')) as StateFile;
});
process.on('SIGTERM', () => process.exit(0));
const packagesAt = process.argv.indexOf('--packages');
const packages = packagesAt > 0 && process.argv[packagesAt + 1] ? new GuestPackageStore(process.argv[packagesAt + 1]!) : undefined;
await startMetadataServer({ nics: () => state.nics, metadata: (vm) => state.metadata[vm], ...(packages ? { packages } : {}) });
process.stdout.write('READY\n');
