export { up, down, defaultDataDir, type UpInfo, type UpOptions } from './up.js';
export { DroverClient, type ClientOptions } from './client.js';
export { loadConfig, resolveConfig, configFilePath, type ResolvedConfig } from './config.js';
export { waitForOperation, operationError } from './wait.js';
export { createCli } from './program.js';
export type { CliContext } from './cli.js';
