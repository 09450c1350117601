export { up, down, defaultDataDir, type UpInfo, type UpOptions } from './up.js';
