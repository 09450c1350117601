export { startAgent, agentVersion, type RunningAgent } from './agent.js';
export { loadAgentConfig, defaultAgentConfig, type AgentConfig } from './config.js';
export { buildAgentServer } from './server.js';
export { VmService } from './vm-service.js';
export { PoolRegistry, volumeFormat } from './pools.js';
export { resolveImportSource } from './import-source.js';
export * from './tls/index.js';
export { loadLayeredConfig, loadOrCreateSecret, type LayeredConfigOptions } from './layered-config.js';
export * as net from './net/index.js';
