export * from './common.js';
export * from './agent.js';
