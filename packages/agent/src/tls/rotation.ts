import type { Server as TlsServer } from 'node:tls';
import { errors } from '@drover/core';
import { createAgentIdentity, describeCertificate, loadAgentIdentity, saveAgentCertificate, type AgentIdentity } from './identity.js';
import { applyAgentTlsContext } from './tls-options.js';

export interface RotationRequest {
  csrPem: string;
  commonName: string;
  sanIps: string[];
  sanDns: string[];
  /** The serial being replaced: the manager revokes it once the new one is issued. */
  previousSerial: string;
}

export interface RotationAnswer {
  certPem: string;
  caPem?: string;
  crlPem?: string;
}

export interface RotateAgentCertificateOptions {
  dir: string;
  /**
   * Gets the CSR signed: in production a call to the manager over mutual TLS with
   * the current certificate (the manager checks the caller's CN matches and calls
   * ClusterCa.rotateCertificate); in tests ClusterCa directly.
   */
  sign: (request: RotationRequest) => Promise<RotationAnswer>;
  /** Defaults to the SANs of the current certificate. */
  sanIps?: string[];
  sanDns?: string[];
  /** A running agent server to switch to the new certificate and CRL. */
  server?: TlsServer;
  timeoutMs?: number;
}

/**
 * Rotation, agent side: new key and CSR (the current identity keeps serving), the
 * manager signs and revokes the old serial, the new certificate is checked against
 * the new key and installed, and the running server switches context.
 */
export async function rotateAgentCertificate(options: RotateAgentCertificateOptions): Promise<AgentIdentity> {
  const current = await loadAgentIdentity(options.dir);
  if (!current) throw errors.conflict(`agent in ${options.dir} has not joined a cluster; nothing to rotate`);
  const facts = describeCertificate(current.certPem);
  const sanIps = options.sanIps ?? facts.sanIps;
  const sanDns = options.sanDns ?? facts.sanDns;
  const { csrPem } = await createAgentIdentity(options.dir, { commonName: facts.commonName, sanIps, sanDns }, options.timeoutMs);
  const answer = await options.sign({ csrPem, commonName: facts.commonName, sanIps, sanDns, previousSerial: facts.serial });
  const identity = await saveAgentCertificate(options.dir, answer.certPem, answer.caPem ?? current.caPem, answer.crlPem, options.timeoutMs);
  if (options.server) applyAgentTlsContext(options.server, identity);
  return identity;
}
