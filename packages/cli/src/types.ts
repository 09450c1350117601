/**
 * The shapes of the manager's public API as the CLI reads them: the schemas'
 * types from `@drover/api`, plus the few answers that have no named type there.
 */
export type { Host, Image, ImageImport, ListQuery, Operation, Vm, VmCreate, VmEdit } from '@drover/api';
import type { Operation, VmCreate } from '@drover/api';

export type OperationState = Operation['state'];
export type Forward = NonNullable<VmCreate['forwards']>[number];

/** POST /hosts/join-tokens (schema `JoinToken`). */
export interface JoinToken {
  token: string;
  expiresAt: string;
  caFingerprint: string;
}

/** An item of GET /vms/:vm/snapshots. */
export interface Snapshot {
  name: string;
  createdAt: string;
  withMemory: boolean;
}

/** A page of a list (schema `Page(item)`); `next` is the cursor of the following page, absent on the last one. */
export interface Page<T> {
  items: T[];
  next?: string;
}
