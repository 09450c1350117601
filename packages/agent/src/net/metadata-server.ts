import { execFile } from 'node:child_process';
import { createServer, type Server } from 'node:http';
import { promisify } from 'node:util';
import { METADATA_ADDRESS, METADATA_PORT, type NicBinding } from './firewall-model.js';
import { maxGuestReportBytes, type GuestPackageStore } from './guest-packages.js';

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
  /** Package updates for guests (VMcasting): offers, archives and reports. Absent: no `/packages*` documents. */
  packages?: GuestPackageStore;
  /** The agent's VM id for a NIC (by tap and MAC), for offers kept by VM id. */
  resolveVm?: (nic: NicBinding) => string | undefined;
}

/** How often the guests' update agents ask for packages. */
export const packagePollSeconds = 10;

async function readBody(request: import('node:http').IncomingMessage, limit: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > limit) return undefined;
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
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

/**
 * A guest's packages: `/packages.json` (its offer), `/packages.txt` (the same,
 * one `NAME VERSION SHA256 SIZE` line each, for the busybox update agent),
 * `/packages/<sha256>` (an archive of its own offer, nothing else) and
 * `POST /packages/installed` (its report: `NAME VERSION` lines).
 */
async function servePackages(
  store: GuestPackageStore,
  resolveVm: MetadataLookup['resolveVm'],
  nic: NicBinding,
  url: string,
  request: import('node:http').IncomingMessage,
  response: import('node:http').ServerResponse,
): Promise<void> {
  const found = store.offerForNic(nic, resolveVm);
  const packages = found?.offer.packages ?? [];
  if (request.method === 'POST' && url === '/packages/installed') {
    if (!found) {
      response.writeHead(404, { 'content-type': 'text/plain' }).end('no package offer for this VM\n');
      return;
    }
    const body = await readBody(request, maxGuestReportBytes);
    if (body === undefined) {
      response.writeHead(413, { 'content-type': 'text/plain' }).end('report too large\n');
      return;
    }
    try {
      const installed = await store.report(found.vm, body);
      response.writeHead(200, { 'content-type': 'text/plain' }).end(`recorded ${installed.length}\n`);
    } catch (error) {
      response.writeHead(400, { 'content-type': 'text/plain' }).end(`${(error as Error).message}\n`);
    }
    return;
  }
  if (request.method !== 'GET') {
    response.writeHead(405, { 'content-type': 'text/plain' }).end('method not allowed\n');
    return;
  }
  if (url === '/packages.json') {
    const body = { vm: nic.vm, pollSeconds: packagePollSeconds, packages: packages.map((p) => ({ ...p, url: `/packages/${p.sha256}` })) };
    response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body) + '\n');
    return;
  }
  if (url === '/packages.txt') {
    response.writeHead(200, { 'content-type': 'text/plain' }).end(packages.map((p) => `${p.name} ${p.version} ${p.sha256} ${p.sizeBytes}\n`).join(''));
    return;
  }
  const sha256 = url.slice('/packages/'.length);
  const archive = found && /^[0-9a-f]{64}$/.test(sha256) ? store.archiveFor(found.offer, sha256) : undefined;
  if (!archive) {
    response.writeHead(404, { 'content-type': 'text/plain' }).end('no such package for this VM\n');
    return;
  }
  response.writeHead(200, { 'content-type': 'application/gzip', 'content-length': String(archive.size) });
  archive.stream.pipe(response);
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
      const url = (request.url ?? '/').split('?')[0]!.replace(/^\/(latest\/)?/, '/');
      if (nic && lookup.packages && (url === '/packages.json' || url === '/packages.txt' || url.startsWith('/packages/'))) {
        await servePackages(lookup.packages, lookup.resolveVm, nic, url, request, response);
        return;
      }
      if (!nic || !meta) {
        response.writeHead(403, { 'content-type': 'text/plain' }).end(`No VM NIC is known at ${remote}\n`);
        return;
      }
      const documents: Record<string, [string, string]> = {
        '/': ['text/plain', `meta-data\nuser-data\nvendor-data\ndrover.json\n${lookup.packages ? 'packages.json\npackages.txt\n' : ''}`],
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
