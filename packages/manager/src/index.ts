export { startManager, type RunningManager, type StartManagerOptions } from './manager.js';
export { loadManagerConfig, defaultManagerConfig, type ManagerConfig } from './config.js';
export { buildManagerServer, publicRoutes } from './http/server.js';
export * from './pki/index.js';
export { openSqliteStore, openPostgresStore, type Store } from './store/index.js';
