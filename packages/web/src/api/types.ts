// Types only: the schemas themselves stay on the server (no TypeBox in the bundle).
import type { Host, Image, ImageImport, Operation, Vm, VmCreate, VmEdit, ManagedVmState } from '@drover/api';
import type { PoolInfo, VolumeInfo, SnapshotInfo, VmDiskAdd, VmDiskInfo, VmNicAdd, VmNicInfo, MigrateRequest } from '@drover/api';
import type { HostPower, HostPowerSettings, HostEvacuationPlan, RestorePlan, PowerPolicy, PowerReport, NightPlan, WakePlan } from '@drover/api';

import type { ApiToken, AuditRecord, Project, Role, RoleBinding, User } from '@drover/api';
export type { ApiToken, AuditRecord, Project, Role, RoleBinding, User };
export type { HostPower, HostPowerSettings, HostEvacuationPlan, RestorePlan, PowerPolicy, PowerReport, NightPlan, WakePlan };
import type { RebalancePlan, RebalanceRequest } from '@drover/api';
export type { RebalancePlan, RebalanceRequest };
import type { PolicyExplanation, PolicyInfo, PolicyLoad, PolicyValidation, SecurityLabelInfo } from '@drover/api';
import type { FirewallExplain, Network, NetworkCreate, SecurityGroup, SecurityGroupCreate, SecurityGroupRuleInput, VmNicView } from '@drover/api';
export type { FirewallExplain, Network, NetworkCreate, SecurityGroup, SecurityGroupCreate, SecurityGroupRuleInput, VmNicView };
export type { PolicyExplanation, PolicyInfo, PolicyLoad, PolicyValidation, SecurityLabelInfo };
import type { VmcastChannel, VmcastFollow, VmcastKey, VmcastPackage, VmcastPackagePublish, VmcastPublish, VmcastRelease, VmcastSubscription, VmcastSubscriptionCreate, VmPackages } from '@drover/api';
export type { VmcastChannel, VmcastFollow, VmcastKey, VmcastPackage, VmcastPackagePublish, VmcastPublish, VmcastRelease, VmcastSubscription, VmcastSubscriptionCreate, VmPackages };
/** The answer of POST /api/v1/vmcast/subscriptions/{id}/poll. */
export interface VmcastPollResult {
  subscription: string;
  status: number;
  bodyBytes: number;
  imported: string[];
  quarantined: Array<{ release: string; reason: string }>;
  failed: Array<{ release: string; reason: string }>;
  error?: string;
}

import type { Lab, LabCreate, LabExample } from '@drover/api';
export type { Lab, LabCreate, LabExample };
export type { Host, Image, ImageImport, Operation, Vm, VmCreate, VmEdit, ManagedVmState, PoolInfo, VolumeInfo, SnapshotInfo, VmDiskAdd, VmDiskInfo, VmNicAdd, VmNicInfo, MigrateRequest };
/** The answer of POST /api/v1/hosts/join-tokens (schema JoinToken). */
export interface JoinTokenAnswer {
  token: string;
  expiresAt: string;
  caFingerprint: string;
}

export interface Page<T> {
  items: T[];
  next?: string;
}

export interface Session {
  actor: string;
  expiresAt: string;
}

export interface Ticket {
  ticket: string;
  expiresAt: string;
}

export interface ListParams {
  limit?: number;
  cursor?: string;
  state?: string;
  name?: string;
  label?: string;
  host?: string;
}

/** What `/api/v1/events` carries (see docs/api.md, Events). */
export type DroverEvent =
  | { seq: number; type: 'vm.updated'; data: Vm }
  | { seq: number; type: 'vm.deleted'; data: { id: string; name: string } }
  | { seq: number; type: 'host.updated'; data: Host }
  | { seq: number; type: 'host.removed'; data: { id: string; name: string } }
  | { seq: number; type: 'operation.updated'; data: Operation }
  | { seq: number; type: 'image.created'; data: Image }
  | { seq: number; type: 'image.deleted'; data: { id: string; name: string; version: string } };

export type DroverEventType = DroverEvent['type'];
export const eventTypes: readonly DroverEventType[] = ['vm.updated', 'vm.deleted', 'host.updated', 'host.removed', 'operation.updated', 'image.created', 'image.deleted'];
import type { EvaManifest, Package, PackageExport } from '@drover/api';
export type { EvaManifest, Package, PackageExport };
