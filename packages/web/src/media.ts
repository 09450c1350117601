import type { Vm, VmCreate } from './api/types.js';
import { formatBytes } from './format.js';

/** Pure helpers of the VM media forms (unit-tested without a browser). */

export type CloudInitSeed = NonNullable<VmCreate['cloudInit']>;

/** The three files of a NoCloud seed as typed in a form. */
export interface CloudInitText {
  userData: string;
  metaData: string;
  networkConfig: string;
}

export const emptyCloudInit: CloudInitText = { userData: '', metaData: '', networkConfig: '' };

/** The seed to send, or undefined when every field is empty (no seed). */
export function cloudInitSeed(text: CloudInitText): CloudInitSeed | undefined {
  if (!text.userData.trim() && !text.metaData.trim() && !text.networkConfig.trim()) return undefined;
  return { userData: text.userData, ...(text.metaData.trim() ? { metaData: text.metaData } : {}), ...(text.networkConfig.trim() ? { networkConfig: text.networkConfig } : {}) };
}

/** "user-data 120 B, meta-data 40 B", or undefined without a seed (the manager echoes sizes only). */
export function cloudInitSummary(seed: Vm['spec']['cloudInit']): string | undefined {
  if (!seed) return undefined;
  return [
    `user-data ${formatBytes(seed.userDataBytes)}`,
    seed.metaDataBytes !== undefined && `meta-data ${formatBytes(seed.metaDataBytes)}`,
    seed.networkConfigBytes !== undefined && `network-config ${formatBytes(seed.networkConfigBytes)}`,
  ]
    .filter(Boolean)
    .join(', ');
}
