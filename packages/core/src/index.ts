export * from './errors.js';
export * from './sizes.js';
