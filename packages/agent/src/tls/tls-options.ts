import { constants as cryptoConstants } from 'node:crypto';
import type { Socket } from 'node:net';
import { TLSSocket, type Server as TlsServer } from 'node:tls';
import { errors } from '@drover/core';
import type { AgentIdentity } from './identity.js';

/** The CN of the manager's client certificate: the only caller the agent API obeys. */
export const managerCommonName = 'drover-manager';

export interface AgentTlsOptions {
  key: string;
  cert: string;
  ca: string;
  crl?: string;
  requestCert: true;
  rejectUnauthorized: true;
  minVersion: 'TLSv1.3';
  secureOptions: number;
}

/**
 * Options for the agent's HTTPS server (Fastify `https`, or https.createServer):
 * a client must present a certificate issued by the cluster CA, not revoked by the
 * loaded CRL, or the TLS handshake fails before any HTTP is read. Only the cluster
 * CA is trusted (giving `ca` replaces Node's public roots).
 *
 * Session tickets are off: a resumed TLS 1.3 session is not checked against the
 * CRL again. Tickets of an older context happen to be refused after
 * setSecureContext, but revocation should not hang on that detail. Node keeps no
 * server-side session cache by default, so every connection makes a full handshake
 * (cheap: the manager keeps its connections alive).
 */
export function agentTlsOptions(identity: AgentIdentity): AgentTlsOptions {
  return {
    key: identity.keyPem,
    cert: identity.certPem,
    ca: identity.caPem,
    ...(identity.crlPem === undefined ? {} : { crl: identity.crlPem }),
    requestCert: true,
    rejectUnauthorized: true,
    minVersion: 'TLSv1.3',
    secureOptions: cryptoConstants.SSL_OP_NO_TICKET,
  };
}

/**
 * Puts a new identity or CRL into a running server (`fastify.server`). Only new
 * connections see it: connections already open (keep-alive, event streams) keep the
 * peer they authenticated, so after a revocation close them too
 * (`server.closeAllConnections()` on an https.Server).
 */
export function applyAgentTlsContext(server: TlsServer, identity: AgentIdentity): void {
  server.setSecureContext(agentTlsOptions(identity));
}

export interface ClientCertificate {
  commonName: string;
  /** Upper-case hex without leading zeros, as ClusterCa records it. */
  serial: string;
  /** SHA-256, "AB:CD:..." */
  fingerprint: string;
}

/**
 * The verified client certificate of a connection (`request.raw.socket` in Fastify),
 * or undefined when the socket is not TLS or the client was not authenticated.
 */
export function clientCertificateOf(socket: Socket | TLSSocket | undefined | null): ClientCertificate | undefined {
  if (!(socket instanceof TLSSocket) || !socket.authorized) return undefined;
  const peer = socket.getPeerCertificate();
  if (!peer || !peer.subject || !peer.serialNumber) return undefined;
  const commonName = Array.isArray(peer.subject.CN) ? undefined : peer.subject.CN;
  if (typeof commonName !== 'string') return undefined;
  return {
    commonName,
    serial: peer.serialNumber.toUpperCase().replace(/^0+(?=.)/, ''),
    fingerprint: peer.fingerprint256,
  };
}

/**
 * For agent API routes: the caller must be the manager. A certificate of the
 * cluster CA with any other CN (another agent, say) is `forbidden`; no verified
 * certificate at all is `unauthenticated`.
 */
export function requireManagerCertificate(socket: Socket | TLSSocket | undefined | null): ClientCertificate {
  const certificate = clientCertificateOf(socket);
  if (!certificate) throw errors.unauthenticated('a client certificate of the cluster CA is required');
  if (certificate.commonName !== managerCommonName) {
    throw errors.forbidden(`client certificate "${certificate.commonName}" is not the manager's`, {
      commonName: certificate.commonName,
      serial: certificate.serial,
    });
  }
  return certificate;
}
