export * from './common.js';
export * from './agent.js';
export * from './http-errors.js';
export * from './manager.js';
export * from './migration.js';
