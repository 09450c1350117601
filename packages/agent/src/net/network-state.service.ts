import type { Server } from 'node:http';
import type { Logger } from 'pino';
import type { NetworkStateAnswer, NetworkStateBody } from '@drover/api';
import { errors } from '@drover/core';
import type { HostNetworkState } from './firewall-model.js';
import { HostNetworks } from './host-network.js';
import { startMetadataServer, type MetadataLookup, type VmMetadata } from './metadata-server.js';

/**
 * The agent's side of networks: the manager PUTs the whole desired state of
 * this host; it is applied (validate, links, dnsmasq, one atomic `nft -f`) and
 * the metadata service answers from it. One apply at a time.
 */
export class NetworkStateService {
  private readonly networks: HostNetworks;
  private state: HostNetworkState = { networks: [], groups: [], nics: [], hostRules: [] };
  private metadata: Record<string, VmMetadata> = {};
  private metadataServer: Server | undefined;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(private readonly options: { stateDir: string; namespace?: string; logger?: Logger; metadataService?: boolean; packages?: Pick<MetadataLookup, 'packages' | 'resolveVm'> }) {
    this.networks = new HostNetworks({ stateDir: options.stateDir, ...(options.namespace ? { namespace: options.namespace } : {}) });
  }

  apply(body: NetworkStateBody): Promise<NetworkStateAnswer> {
    const next = this.queue.then(async () => {
      const { metadata, ...state } = body;
      const rendered = await this.networks.apply(state as HostNetworkState);
      this.state = state as HostNetworkState;
      this.metadata = metadata ?? {};
      await this.ensureMetadataServer();
      return { ruleCount: rendered.ruleCount, script: rendered.script };
    });
    this.queue = next.catch(() => undefined);
    return next;
  }

  /** The effective ruleset (what `drover fw explain` shows). */
  current(): NetworkStateAnswer {
    const rendered = this.networks.ruleset;
    if (!rendered) throw errors.notFound('network state', 'this host');
    return { ruleCount: rendered.ruleCount, script: rendered.script };
  }

  private async ensureMetadataServer(): Promise<void> {
    if (this.metadataServer || this.options.metadataService === false || this.state.networks.length === 0) return;
    try {
      this.metadataServer = await startMetadataServer({ nics: () => this.state.nics, metadata: (vm) => this.metadata[vm], ...(this.options.packages ?? {}) });
    } catch (error) {
      this.options.logger?.warn({ err: error }, 'metadata service could not listen on 169.254.169.254:80');
    }
  }

  async close(): Promise<void> {
    await new Promise((resolve) => (this.metadataServer ? this.metadataServer.close(resolve) : resolve(undefined)));
    this.metadataServer = undefined;
  }

  /** Removes everything (tests; a host leaving the cluster). */
  async destroy(): Promise<void> {
    await this.close();
    await this.networks.destroy();
  }
}
