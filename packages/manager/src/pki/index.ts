export {
  ClusterCa,
  type ClusterCaOptions,
  type CurrentCrl,
  type IssueAgentCertificateRequest,
  type IssuedCertificate,
  type IssuedCredentials,
  type RotateCertificateRequest,
  type RotatedCertificate,
} from './cluster-ca.js';
export { revocationReasons, type CertificateProfile, type CertificateRecord, type RevocationReason } from './ca-index.js';
export {
  fingerprint,
  sameFingerprint,
  normalizeSerial,
  managerClientCommonName,
  managerServerCommonName,
  validateAgentCommonName,
  validateSanIps,
  validateSanDns,
} from './cert-fields.js';
export { maxCsrBytes } from './openssl-ca.js';
export { generateJoinToken, hashToken, tokenMatchesHash, type JoinToken } from './join-tokens.js';
export {
  agentDispatcherOptions,
  mtlsJson,
  type AgentClientCredentials,
  type AgentDispatcherExtras,
  type MtlsAnswer,
  type MtlsJsonOptions,
} from './agent-client-tls.js';
