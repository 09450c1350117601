export {
  createAgentIdentity,
  saveAgentCertificate,
  saveAgentCrl,
  loadAgentCrl,
  loadAgentIdentity,
  saveJoinRecord,
  loadJoinRecord,
  describeCertificate,
  type AgentIdentity,
  type AgentIdentityRequest,
  type CertificateFacts,
  type JoinRecord,
  type SavedCrl,
} from './identity.js';
export { inspectCrl, assertCrlUsable, maxCrlBytes, type CrlFacts } from './crl.js';
export {
  agentTlsOptions,
  applyAgentTlsContext,
  trackAgentConnections,
  clientCertificateOf,
  requireManagerCertificate,
  managerCommonName,
  type AgentTlsOptions,
  type ClientCertificate,
} from './tls-options.js';
export { joinCluster, joinPath, type JoinClusterOptions, type JoinResult } from './join.js';
export { postJsonToManager, isLoopbackHost, type ManagerAnswer, type ManagerRequestOptions } from './manager-request.js';
export {
  rotateAgentCertificate,
  type RotateAgentCertificateOptions,
  type RotationRequest,
  type RotationAnswer,
} from './rotation.js';
export { runOpenssl, defaultOpensslTimeoutMs } from './openssl.js';
export { qemuDhParamsPem } from './qemu-dh-params.js';
