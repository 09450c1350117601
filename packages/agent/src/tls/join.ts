import { X509Certificate } from 'node:crypto';
import { DroverError, errors, isErrorCode } from '@drover/core';
import { createAgentIdentity, loadAgentIdentity, saveAgentCertificate, saveJoinRecord, type AgentIdentity } from './identity.js';
import { postJsonToManager } from './manager-request.js';

export const joinPath = '/api/v1/hosts/join';

export interface JoinClusterOptions {
  /** e.g. https://manager.example:8443 (plain http only for a loopback manager). */
  managerUrl: string;
  /** The one-time token the operator got from the manager. */
  joinToken: string;
  /** The agent's TLS directory (see identity.ts). */
  dir: string;
  /** The host's name: the certificate's CN. */
  commonName: string;
  /** Addresses the manager will dial; each becomes an IP SAN. */
  sanIps: string[];
  sanDns?: string[];
  /** The agent API URL the manager should use (sent as `address`). */
  agentUrl: string;
  /** SHA-256 fingerprint of the cluster CA (or of the manager's certificate); required for https. */
  caFingerprint?: string;
  /** Whole join, every step included (default 30 s). */
  timeoutMs?: number;
}

export interface JoinResult {
  hostId: string;
  identity: AgentIdentity;
}

/**
 * Joins the cluster: makes a key and CSR, sends `{ token, csr, name, address,
 * sanIps, sanDns }` to the manager's join endpoint, checks the certificate it gets
 * back (this key, this name, these IPs, signed by the returned CA) and saves it.
 */
export async function joinCluster(options: JoinClusterOptions): Promise<JoinResult> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  const left = () => Math.max(1, deadline - Date.now());
  if (typeof options.joinToken !== 'string' || options.joinToken.length === 0) throw errors.invalid('a join token is required');
  let managerUrl: URL;
  try {
    managerUrl = new URL(options.managerUrl);
  } catch {
    throw errors.invalid(`manager URL "${options.managerUrl}" is not a URL`);
  }
  if (await loadAgentIdentity(options.dir)) {
    throw errors.conflict(`this agent already joined a cluster (identity in ${options.dir}); remove it to join again`, { dir: options.dir });
  }
  const { csrPem } = await createAgentIdentity(
    options.dir,
    { commonName: options.commonName, sanIps: options.sanIps, sanDns: options.sanDns ?? [] },
    left(),
  );
  const joinUrl = new URL(joinPath, managerUrl);
  const answer = await postJsonToManager(
    joinUrl,
    {
      token: options.joinToken,
      csr: csrPem,
      name: options.commonName,
      address: options.agentUrl,
      sanIps: options.sanIps,
      ...(options.sanDns && options.sanDns.length > 0 ? { sanDns: options.sanDns } : {}),
    },
    { timeoutMs: left(), ...(options.caFingerprint ? { caFingerprint: options.caFingerprint } : {}) },
  );
  if (answer.status < 200 || answer.status >= 300) throw managerRefusal(answer.status, answer.body);

  const reply = answer.body as { hostId?: unknown; certPem?: unknown; caPem?: unknown; crlPem?: unknown } | null;
  if (
    !reply ||
    typeof reply.hostId !== 'string' ||
    typeof reply.certPem !== 'string' ||
    typeof reply.caPem !== 'string' ||
    (reply.crlPem !== undefined && reply.crlPem !== null && typeof reply.crlPem !== 'string')
  ) {
    throw errors.unavailable('manager answered the join without hostId, certPem and caPem', { status: answer.status });
  }
  const certificate = new X509Certificate(reply.certPem);
  if (!/^CN=/m.test(certificate.subject) || /^CN=(.*)$/m.exec(certificate.subject)?.[1] !== options.commonName) {
    throw errors.invalid(`manager issued a certificate for "${certificate.subject}", not for CN=${options.commonName}`);
  }
  for (const ip of options.sanIps) {
    if (!certificate.checkIP(ip)) throw errors.invalid(`issued certificate does not cover IP ${ip}`, { sanIps: options.sanIps });
  }
  const identity = await saveAgentCertificate(
    options.dir,
    reply.certPem,
    reply.caPem,
    typeof reply.crlPem === 'string' ? reply.crlPem : undefined,
    left(),
  );
  await saveJoinRecord(options.dir, { hostId: reply.hostId, managerUrl: managerUrl.href, joinedAt: new Date().toISOString() });
  return { hostId: reply.hostId, identity };
}

function managerRefusal(status: number, body: unknown): DroverError {
  const error = (body as { error?: { code?: unknown; message?: unknown } } | null)?.error;
  const message = typeof error?.message === 'string' ? error.message : `HTTP ${status}`;
  const byStatus = status === 401 ? 'unauthenticated' : status === 403 ? 'forbidden' : status === 409 ? 'conflict' : status === 400 ? 'invalid' : 'unavailable';
  const code = isErrorCode(error?.code) ? error.code : byStatus;
  return new DroverError(code, `manager refused the join: ${message}`, { details: { status } });
}
