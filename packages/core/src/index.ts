export * from './errors.js';
export * from './sizes.js';
export * from './testing.js';
export * from './scheduler/index.js';
export * from './policy/index.js';
export * from './planner/index.js';
