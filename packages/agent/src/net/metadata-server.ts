import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { promisify } from 'node:util';
import { METADATA_ADDRESS, METADATA_PORT, type NicBinding } from './firewall-model.js';

const run = promisify(execFile);

/** What a VM may read about itself: NoCloud `meta-data`/`user-data` and Drover's own settings. */
export interface VmMetadata {
  instanceId: string;
  hostname: string;
  userData?: string;
  /** Update channel, lab settings, anything else for the guest; served as `/drover.json`. */
  settings?: Record<string, unknown>;
}

export interface MetadataLookup {
  /** The NICs of this host (the firewall's bindings). */
  nics(): readonly NicBinding[];
  metadata(vm: string): VmMetadata | undefined;
}

/** How a caller is identified: the neighbour entry of its address, then the bridge port that MAC was learnt on. */
export interface CallerIdentity {
  ip: string;
  mac: string;
  bridge: string;
  tap: string;
}

export async function identifyCaller(ip: string): Promise<CallerIdentity | undefined> {
  const { stdout } = await run('ip', ['-j', 'neigh', 'show', 'to', ip], { timeout: 5000 });
  const neighbour = (JSON.parse(stdout || '[]') as Array<{ dev?: string; lladdr?: string; state?: string[] }>).find((n) => n.lladdr);
  if (!neighbour?.dev || !neighbour.lladdr) return undefined;
  const fdb = await run('bridge', ['-j', 'fdb', 'show', 'br', neighbour.dev], { timeout: 5000 });
  const entry = (JSON.parse(fdb.stdout || '[]') as Array<{ mac?: string; ifname?: string; flags?: string[] }>).find(
    (e) => e.mac?.toLowerCase() === neighbour.lladdr!.toLowerCase() && e.ifname !== undefined && e.ifname !== neighbour.dev,
  );
  if (!entry?.ifname) return undefined;
  return { ip, mac: neighbour.lladdr.toLowerCase(), bridge: neighbour.dev, tap: entry.ifname };
}

function metaData(meta: VmMetadata): string {
  return `instance-id: ${meta.instanceId}\nlocal-hostname: ${meta.hostname}\n`;
}

/**
 * The metadata service on 169.254.169.254:80 (every Drover bridge holds that
 * address; the firewall lets guests reach this port and nothing else of the
 * host). A caller gets only its own VM's data, and only when its address, its
 * MAC and the tap it sits behind are those of one NIC binding: a guest that
 * borrowed another's address is refused.
 */
export async function startMetadataServer(lookup: MetadataLookup, options: { host?: string; port?: number } = {}): Promise<Server> {
  const server = createServer((request, response) => {
    void (async () => {
      const remote = (request.socket.remoteAddress ?? '').replace(/^::ffff:/, '');
      const caller = await identifyCaller(remote).catch(() => undefined);
      const nic = caller && lookup.nics().find((n) => n.ip === caller.ip && n.mac === caller.mac && n.tap === caller.tap);
      const meta = nic && lookup.metadata(nic.vm);
      if (!nic || !meta) {
        response.writeHead(403, { 'content-type': 'text/plain' }).end(`No VM NIC is known at ${remote}\n`);
        return;
      }
      const url = (request.url ?? '/').split('?')[0]!.replace(/^\/(latest\/)?/, '/');
      const documents: Record<string, [string, string]> = {
        '/': ['text/plain', 'meta-data\nuser-data\nvendor-data\ndrover.json\n'],
        '/meta-data': ['text/yaml', metaData(meta)],
        '/user-data': ['text/plain', meta.userData ?? ''],
        '/vendor-data': ['text/plain', ''],
        '/drover.json': ['application/json', JSON.stringify({ vm: nic.vm, nic: nic.nic, network: nic.network, ip: nic.ip, mac: nic.mac, instanceId: meta.instanceId, hostname: meta.hostname, ...(meta.settings ?? {}) }) + '\n'],
      };
      const document = documents[url];
      if (request.method !== 'GET' || !document) {
        response.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
        return;
      }
      response.writeHead(200, { 'content-type': document[0] }).end(document[1]);
    })().catch(() => response.writeHead(500).end());
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? METADATA_PORT, options.host ?? METADATA_ADDRESS, () => resolve());
  });
  return server;
}
