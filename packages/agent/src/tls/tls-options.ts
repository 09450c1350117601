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

const openConnections = new WeakMap<TlsServer, Set<TLSSocket>>();

/**
 * Keeps the set of a server's open TLS connections, so that installing a CRL can
 * close the ones whose client certificate it revokes. Call it once, before listening.
 */
export function trackAgentConnections(server: TlsServer): void {
  if (openConnections.has(server)) return;
  const open = new Set<TLSSocket>();
  openConnections.set(server, open);
  server.on('secureConnection', (socket: TLSSocket) => {
    open.add(socket);
    socket.once('close', () => open.delete(socket));
  });
}

export interface ApplyAgentTlsOptions {
  /** Serials the new CRL revokes: open connections authenticated with one of them are closed. */
  revokedSerials?: Iterable<string>;
  /** A connection to leave open (the one carrying the request that installs the CRL). */
  keep?: Socket | TLSSocket | null;
}

/**
 * Puts a new identity or CRL into a running server (`fastify.server`) without
 * closing its listener: new connections are checked against it at once. Connections
 * already open keep the peer they authenticated, so those of a peer the new CRL
 * revokes are closed here (for servers set up with `trackAgentConnections`); the
 * others, the manager's keep-alive connections and console streams, stay. Returns
 * how many connections were closed.
 */
export function applyAgentTlsContext(server: TlsServer, identity: AgentIdentity, options: ApplyAgentTlsOptions = {}): number {
  server.setSecureContext(agentTlsOptions(identity));
  const revoked = new Set(options.revokedSerials ?? []);
  if (revoked.size === 0) return 0;
  let closed = 0;
  for (const socket of openConnections.get(server) ?? []) {
    if (socket === options.keep) continue;
    const serial = clientCertificateOf(socket)?.serial;
    if (serial !== undefined && revoked.has(serial)) {
      socket.destroy();
      closed += 1;
    }
  }
  return closed;
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
  // Read once per connection: a TLS 1.3 peer cannot change its certificate on an open
  // connection, and getPeerCertificate() decodes the whole certificate on every call.
  const known = peerCertificates.get(socket);
  if (known) return known;
  const peer = socket.getPeerCertificate();
  if (!peer || !peer.subject || !peer.serialNumber) return undefined;
  const commonName = Array.isArray(peer.subject.CN) ? undefined : peer.subject.CN;
  if (typeof commonName !== 'string') return undefined;
  const certificate = {
    commonName,
    serial: peer.serialNumber.toUpperCase().replace(/^0+(?=.)/, ''),
    fingerprint: peer.fingerprint256,
  };
  peerCertificates.set(socket, certificate);
  return certificate;
}

/** The verified client certificate of each open connection, as `clientCertificateOf` read it. */
const peerCertificates = new WeakMap<TLSSocket, ClientCertificate>();

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
