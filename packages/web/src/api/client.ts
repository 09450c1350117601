import type {
  Host, Image, ImageImport, JoinTokenAnswer, ListParams, MigrateRequest, Operation, Page, PoolInfo, Session, SnapshotInfo, Ticket, Vm, VmCreate, VmDiskAdd, VmDiskInfo, VmEdit, VmNicAdd,
  VmNicInfo, VolumeInfo,
} from './types.js';
import type { HostEvacuationPlan, HostPower, HostPowerSettings, NightPlan, PowerPolicy, PowerReport, RestorePlan, WakePlan } from './types.js';
import type { PolicyExplanation, PolicyInfo, PolicyLoad, PolicyValidation, SecurityLabelInfo } from './types.js';
import type { Package, PackageExport } from './types.js';
import type { FirewallExplain, Network, NetworkCreate, SecurityGroup, SecurityGroupCreate, SecurityGroupRuleInput, VmNicView } from './types.js';
import type { RebalancePlan, RebalanceRequest } from './types.js';
import type { Lab, LabCreate, LabExample } from './types.js';
import type { ApiToken, AuditRecord, Project, Role, RoleBinding, User } from './types.js';
import type { VmcastChannel, VmcastFollow, VmcastKey, VmcastPackage, VmcastPackagePublish, VmcastPollResult, VmcastPublish, VmcastRelease, VmcastSubscription, VmcastSubscriptionCreate, VmPackages } from './types.js';

/**
 * The console's only way to the manager: the public REST API under /api/v1.
 * The session cookie (HttpOnly, SameSite=Strict) authenticates every call;
 * anything but GET/HEAD carries `X-Drover-CSRF: 1`, which the manager demands
 * of cookie-authenticated changes (a cross-site form cannot set a header).
 */

export const csrfHeader = 'X-Drover-CSRF';

/** An error answer of the manager, `{error:{code,message,details}}`, or a failure to reach it. */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details: Record<string, unknown> = {},
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

/** A mistake in a form, found before anything is sent. */
export class InputError extends Error {
  override name = 'InputError';
}

/** A plain-words headline for an error code; the server's own message follows it. */
export function errorTitle(error: unknown): string {
  if (error instanceof InputError) return 'Please correct the form';
  if (!(error instanceof ApiError)) return 'Something went wrong';
  switch (error.code) {
    case 'invalid': return 'The request was refused as invalid';
    case 'unauthenticated': return 'You are not logged in';
    case 'forbidden': return 'Not allowed';
    case 'not_found': return 'Not found';
    case 'conflict': return 'Not possible right now';
    case 'precondition_failed': return 'Changed elsewhere in the meantime';
    case 'too_large': return 'Too large';
    case 'unavailable': return 'Temporarily unavailable; try again';
    case 'timeout': return 'The manager timed out';
    case 'network': return 'Cannot reach the manager';
    case 'internal': return 'The manager failed';
    default: return `Error (${error.code})`;
  }
}

export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | boolean | undefined>;
  headers?: Record<string, string>;
  signal?: AbortSignal;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export function queryString(query: RequestOptions['query']): string {
  if (!query) return '';
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(query)) if (value !== undefined && value !== '') params.set(key, String(value));
  const text = params.toString();
  return text ? `?${text}` : '';
}

/** Turns a non-2xx answer into an ApiError, keeping the server's code and message. */
export async function errorFromResponse(response: Response): Promise<ApiError> {
  const text = await response.text().catch(() => '');
  try {
    const body = JSON.parse(text) as { error?: { code?: unknown; message?: unknown; details?: unknown } };
    if (body.error && typeof body.error.message === 'string') {
      return new ApiError(response.status, typeof body.error.code === 'string' ? body.error.code : 'error', body.error.message, (body.error.details ?? {}) as Record<string, unknown>);
    }
  } catch {
    /* not JSON: fall through */
  }
  return new ApiError(response.status, statusCode(response.status), text.trim().slice(0, 300) || `The manager answered ${response.status} ${response.statusText}`.trim());
}

function statusCode(status: number): string {
  if (status === 401) return 'unauthenticated';
  if (status === 403) return 'forbidden';
  if (status === 404) return 'not_found';
  if (status === 409) return 'conflict';
  if (status === 503) return 'unavailable';
  return status >= 500 ? 'internal' : 'invalid';
}

export class ApiClient {
  /** Called with every 401 from a route other than the login itself: the session ended. */
  onUnauthenticated: (() => void) | undefined;

  constructor(
    private readonly base = '',
    private readonly fetcher: FetchLike = (input, init) => globalThis.fetch(input, init),
  ) {}

  url(path: string, query?: RequestOptions['query']): string {
    return `${this.base}/api/v1${path}${queryString(query)}`;
  }

  async raw(method: string, path: string, options: RequestOptions & { rawBody?: BodyInit; contentType?: string } = {}): Promise<Response> {
    const headers: Record<string, string> = { accept: 'application/json', ...options.headers };
    if (method !== 'GET' && method !== 'HEAD') headers[csrfHeader] = '1';
    let body: BodyInit | undefined;
    if (options.rawBody !== undefined) {
      body = options.rawBody;
      headers['content-type'] = options.contentType ?? 'application/octet-stream';
    } else if (options.body !== undefined) {
      body = JSON.stringify(options.body);
      headers['content-type'] = 'application/json';
    }
    let response: Response;
    try {
      response = await this.fetcher(this.url(path, options.query), {
        method,
        headers,
        credentials: 'same-origin',
        ...(body === undefined ? {} : { body }),
        ...(options.signal ? { signal: options.signal } : {}),
      });
    } catch (cause) {
      if ((cause as Error)?.name === 'AbortError') throw cause;
      throw new ApiError(0, 'network', `The manager did not answer (${errorMessage(cause)})`);
    }
    if (!response.ok) {
      const error = await errorFromResponse(response);
      if (response.status === 401 && !path.startsWith('/session')) this.onUnauthenticated?.();
      throw error;
    }
    return response;
  }

  async request<T>(method: string, path: string, options: RequestOptions = {}): Promise<T> {
    const response = await this.raw(method, path, options);
    if (response.status === 204) return undefined as T;
    const text = await response.text();
    if (!text) return undefined as T;
    return (response.headers.get('content-type') ?? '').includes('json') ? (JSON.parse(text) as T) : (text as T);
  }

  // ------------------------------------------------------------------ session
  login(token: string): Promise<Session> {
    return this.request('POST', '/sessions', { body: { token } });
  }
  loginWithPassword(username: string, password: string): Promise<Session> {
    return this.request('POST', '/sessions', { body: { username, password } });
  }

  // ------------------------------------------------------------------ users, roles, projects, tokens, audit
  users(): Promise<{ items: User[] }> {
    return this.request('GET', '/users');
  }
  createUser(body: { name: string; password?: string; bindings?: RoleBinding[]; defaultProject?: string }): Promise<User> {
    return this.request('POST', '/users', { body });
  }
  editUser(name: string, body: { password?: string; bindings?: RoleBinding[]; disabled?: boolean; defaultProject?: string | null }): Promise<User> {
    return this.request('PATCH', `/users/${enc(name)}`, { body });
  }
  deleteUser(name: string): Promise<void> {
    return this.request('DELETE', `/users/${enc(name)}`);
  }
  roles(): Promise<{ items: Role[] }> {
    return this.request('GET', '/roles');
  }
  createRole(body: { name: string; description?: string; permissions: string[] }): Promise<Role> {
    return this.request('POST', '/roles', { body });
  }
  deleteRole(name: string): Promise<void> {
    return this.request('DELETE', `/roles/${enc(name)}`);
  }
  projects(): Promise<{ items: Project[] }> {
    return this.request('GET', '/projects');
  }
  createProject(body: { name: string; description?: string; quota?: Project['quota'] }): Promise<Project> {
    return this.request('POST', '/projects', { body });
  }
  deleteProject(name: string): Promise<void> {
    return this.request('DELETE', `/projects/${enc(name)}`);
  }
  tokens(): Promise<{ items: ApiToken[] }> {
    return this.request('GET', '/tokens');
  }
  createToken(body: { name: string; user?: string; roles?: string[]; projects?: string[]; expiresInSeconds?: number }): Promise<{ token: string; info: ApiToken }> {
    return this.request('POST', '/tokens', { body });
  }
  revokeToken(id: string): Promise<ApiToken> {
    return this.request('DELETE', `/tokens/${enc(id)}`);
  }
  audit(query: { actor?: string; decision?: string; action?: string; since?: string; until?: string; after?: number; limit?: number } = {}): Promise<{ items: AuditRecord[] }> {
    return this.request('GET', '/audit', { query });
  }
  /** A download link of the audit log as JSON lines. */
  auditExportUrl(query: { actor?: string; decision?: string } = {}): string {
    return this.url('/audit/export', query);
  }
  verifyAudit(): Promise<{ ok: boolean; checked: number; firstBad?: { seq: number; reason: string } }> {
    return this.request('GET', '/audit/verify');
  }
  session(): Promise<Session> {
    return this.request('GET', '/session');
  }
  logout(): Promise<void> {
    return this.request('DELETE', '/session');
  }
  /** A single-use ticket (60 s) for one WebSocket. */
  ticket(): Promise<Ticket> {
    return this.request('POST', '/tickets', { body: {} });
  }
  /** ws(s):// URL of a stream route, with a fresh ticket. */
  async socketUrl(path: string): Promise<string> {
    const { ticket } = await this.ticket();
    const origin = this.base || globalThis.location.origin;
    return `${origin.replace(/^http/, 'ws')}/api/v1${path}?ticket=${encodeURIComponent(ticket)}`;
  }

  // ------------------------------------------------------------------ hosts
  hosts(params: ListParams = {}): Promise<Page<Host>> {
    return this.request('GET', '/hosts', { query: { ...params } });
  }
  removeHost(id: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(id)}`);
  }
  rotateCertificate(id: string): Promise<Operation> {
    return this.request('POST', `/hosts/${enc(id)}/rotate-certificate`, { body: {} });
  }
  joinToken(ttlSeconds?: number): Promise<JoinTokenAnswer> {
    return this.request('POST', '/hosts/join-tokens', { body: ttlSeconds === undefined ? {} : { ttlSeconds } });
  }

  // ------------------------------------------------------------------ labs
  labs(): Promise<{ items: Lab[] }> {
    return this.request('GET', '/labs');
  }
  lab(id: string): Promise<Lab> {
    return this.request('GET', `/labs/${enc(id)}`);
  }
  labExamples(): Promise<{ items: LabExample[] }> {
    return this.request('GET', '/lab-examples');
  }
  deployLab(body: LabCreate): Promise<Operation> {
    return this.request('POST', '/labs', { body });
  }
  labAction(id: string, action: 'start' | 'stop' | 'reset'): Promise<Operation> {
    return this.request('POST', `/labs/${enc(id)}/${action}`, { body: {} });
  }
  snapshotLab(id: string, name: string): Promise<Operation> {
    return this.request('POST', `/labs/${enc(id)}/snapshot`, { body: { name } });
  }
  cloneLab(id: string, name: string): Promise<Operation> {
    return this.request('POST', `/labs/${enc(id)}/clone`, { body: { name } });
  }
  destroyLab(id: string): Promise<Operation> {
    return this.request('DELETE', `/labs/${enc(id)}`);
  }

  // ------------------------------------------------------------------ networks and firewall
  networks(): Promise<{ items: Network[] }> {
    return this.request('GET', '/networks');
  }
  createNetwork(body: NetworkCreate): Promise<Network> {
    return this.request('POST', '/networks', { body });
  }
  deleteNetwork(name: string): Promise<void> {
    return this.request('DELETE', `/networks/${enc(name)}`);
  }
  securityGroups(): Promise<{ items: SecurityGroup[] }> {
    return this.request('GET', '/security-groups');
  }
  createSecurityGroup(body: SecurityGroupCreate): Promise<SecurityGroup> {
    return this.request('POST', '/security-groups', { body });
  }
  deleteSecurityGroup(name: string): Promise<void> {
    return this.request('DELETE', `/security-groups/${enc(name)}`);
  }
  addSecurityGroupRule(name: string, rule: SecurityGroupRuleInput): Promise<SecurityGroup> {
    return this.request('POST', `/security-groups/${enc(name)}/rules`, { body: rule });
  }
  removeSecurityGroupRule(name: string, index: number): Promise<SecurityGroup> {
    return this.request('DELETE', `/security-groups/${enc(name)}/rules/${index}`);
  }
  vmNetworks(vm: string): Promise<{ items: VmNicView[] }> {
    return this.request('GET', `/vms/${enc(vm)}/networks`);
  }
  vmFirewall(vm: string): Promise<FirewallExplain> {
    return this.request('GET', `/vms/${enc(vm)}/firewall`);
  }

  // ------------------------------------------------------------------ security policy (sHype)
  /** The active policy; 404 (ApiError not_found) when none is loaded. */
  policy(): Promise<PolicyInfo> {
    return this.request('GET', '/policy');
  }
  loadPolicy(body: PolicyLoad): Promise<PolicyInfo> {
    return this.request('PUT', '/policy', { body });
  }
  validatePolicy(body: PolicyLoad): Promise<PolicyValidation> {
    return this.request('POST', '/policy/validate', { body });
  }
  /** A download link of the active policy. */
  policyExportUrl(format: 'xml' | 'yaml' | 'json'): string {
    return this.url('/policy/export', { format });
  }
  policyLabels(): Promise<SecurityLabelInfo[]> {
    return this.request('GET', '/policy/labels');
  }
  setPolicyLabel(kind: 'host' | 'volume' | 'image' | 'network', object: string, label: string | null): Promise<SecurityLabelInfo | null> {
    return this.request('PUT', '/policy/labels', { body: { kind, object, label } });
  }
  explainPolicy(vm: string, host: string): Promise<PolicyExplanation> {
    return this.request('GET', '/policy/explain', { query: { vm, host } });
  }

  // ------------------------------------------------------------------ host power and maintenance
  /** Null when the host has no power settings. */
  hostPower(id: string): Promise<HostPower | null> {
    return this.request('GET', `/hosts/${enc(id)}/power`);
  }
  setHostPower(id: string, settings: HostPowerSettings): Promise<HostPower> {
    return this.request('PUT', `/hosts/${enc(id)}/power`, { body: settings });
  }
  removeHostPower(id: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(id)}/power`);
  }
  /** Starts a `host.power` operation (on, off, cycle, status). */
  powerHost(id: string, action: 'on' | 'off' | 'cycle' | 'status'): Promise<Operation> {
    return this.request('POST', `/hosts/${enc(id)}/power/${action}`, { body: {}, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  enterMaintenance(id: string): Promise<Host> {
    return this.request('POST', `/hosts/${enc(id)}/maintenance`, { body: {} });
  }
  /** The plan (dryRun) or the started `host.evacuate` operation. */
  evacuateHost(id: string, body: { dryRun?: boolean; concurrency?: number } = {}): Promise<Operation | HostEvacuationPlan> {
    return this.request('POST', `/hosts/${enc(id)}/evacuate`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** The list (dryRun) or the started `host.restore` operation. */
  restoreHost(id: string, body: { dryRun?: boolean } = {}): Promise<Operation | RestorePlan> {
    return this.request('POST', `/hosts/${enc(id)}/restore`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  powerPolicy(): Promise<PowerPolicy | null> {
    return this.request('GET', '/power/policy');
  }
  setPowerPolicy(policy: PowerPolicy): Promise<PowerPolicy> {
    return this.request('PUT', '/power/policy', { body: policy });
  }
  powerReport(): Promise<PowerReport> {
    return this.request('GET', '/power/report');
  }
  runNightPlan(body: { dryRun?: boolean } = {}): Promise<Operation | NightPlan> {
    return this.request('POST', '/power/night-plan', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  wakeHosts(body: { dryRun?: boolean } = {}): Promise<Operation | WakePlan> {
    return this.request('POST', '/power/wake', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** The planner's rebalance: the plan with `dryRun`, otherwise the operation `cluster.rebalance`. */
  rebalance(body: RebalanceRequest = {}): Promise<Operation | RebalancePlan> {
    return this.request('POST', '/cluster/rebalance', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }

  // ------------------------------------------------------------------ images
  images(params: ListParams = {}): Promise<Page<Image>> {
    return this.request('GET', '/images', { query: { ...params } });
  }
  /** Starts an `image.import` operation: downloaded or copied, inspected, stored. */
  importImage(body: ImageImport): Promise<Operation> {
    return this.request('POST', '/images', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** Starts an `image.delete` operation; 409 for an appliance or an image a VM uses. */
  deleteImage(id: string): Promise<Operation> {
    return this.request('DELETE', `/images/${enc(id)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }

  // ------------------------------------------------------------------ appliance packages
  packages(): Promise<{ items: Package[] }> {
    return this.request('GET', '/packages');
  }
  /** Starts a `package.export` operation: stopped VMs → a signed .eva kept by the manager. */
  exportPackage(body: PackageExport): Promise<Operation> {
    return this.request('POST', '/packages/export', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** Deletes a package, its file and its images (409 while a VM uses one). */
  deletePackage(id: string): Promise<void> {
    return this.request('DELETE', `/packages/${enc(id)}`);
  }
  /** The package's signed .eva file (a download link). */
  packageFileUrl(id: string): string {
    return this.url(`/packages/${enc(id)}/file`);
  }
  /** Where an .eva (or, with kind "ova", an OVA) is uploaded as the request body (XHR, for progress). */
  packageUploadUrl(kind: 'eva' | 'ova' = 'eva'): string {
    return this.url('/packages/import/upload', { kind });
  }

  // ------------------------------------------------------------------ VMcasting
  vmcastKeys(): Promise<Page<VmcastKey>> {
    return this.request('GET', '/vmcast/keys');
  }
  /** A new active publisher key; the previous active one is retired (rotation). */
  createVmcastKey(name: string): Promise<VmcastKey> {
    return this.request('POST', '/vmcast/keys', { body: { name } });
  }
  revokeVmcastKey(id: string): Promise<VmcastKey> {
    return this.request('POST', `/vmcast/keys/${enc(id)}/revoke`, { body: {} });
  }
  vmcastChannels(): Promise<Page<VmcastChannel>> {
    return this.request('GET', '/vmcast/channels');
  }
  createVmcastChannel(body: { name: string; title?: string; description?: string }): Promise<VmcastChannel> {
    return this.request('POST', '/vmcast/channels', { body });
  }
  vmcastChannelReleases(channel: string): Promise<Page<VmcastRelease>> {
    return this.request('GET', `/vmcast/channels/${enc(channel)}/releases`);
  }
  publishVmcastRelease(channel: string, body: VmcastPublish): Promise<VmcastRelease> {
    return this.request('POST', `/vmcast/channels/${enc(channel)}/releases`, { body });
  }
  /** The public RSS feed of a channel (a link). */
  vmcastFeedUrl(channel: string): string {
    return this.url(`/vmcast/channels/${enc(channel)}/feed.rss`);
  }
  /** The public JSON catalog of a channel (a link). */
  vmcastCatalogUrl(channel: string): string {
    return this.url(`/vmcast/channels/${enc(channel)}/catalog.json`);
  }
  vmcastSubscriptions(): Promise<Page<VmcastSubscription>> {
    return this.request('GET', '/vmcast/subscriptions');
  }
  subscribeVmcast(body: VmcastSubscriptionCreate): Promise<VmcastSubscription> {
    return this.request('POST', '/vmcast/subscriptions', { body });
  }
  unsubscribeVmcast(id: string): Promise<void> {
    return this.request('DELETE', `/vmcast/subscriptions/${enc(id)}`);
  }
  pollVmcast(id: string): Promise<VmcastPollResult> {
    return this.request('POST', `/vmcast/subscriptions/${enc(id)}/poll`, { body: {} });
  }
  revokePinnedKey(id: string, keyId: string): Promise<VmcastSubscription> {
    return this.request('POST', `/vmcast/subscriptions/${enc(id)}/keys/${enc(keyId)}/revoke`, { body: {} });
  }
  vmcastSubscriptionReleases(id: string): Promise<Page<VmcastRelease>> {
    return this.request('GET', `/vmcast/subscriptions/${enc(id)}/releases`);
  }
  vmcastChannelPackages(channel: string): Promise<Page<VmcastPackage>> {
    return this.request('GET', `/vmcast/channels/${enc(channel)}/packages`);
  }
  publishVmcastPackage(channel: string, body: VmcastPackagePublish): Promise<VmcastPackage> {
    return this.request('POST', `/vmcast/channels/${enc(channel)}/packages`, { body });
  }
  vmcastSubscriptionPackages(id: string): Promise<Page<VmcastPackage>> {
    return this.request('GET', `/vmcast/subscriptions/${enc(id)}/packages`);
  }
  /** A VM's guest packages: installed (its report), offered, pending approval. */
  vmPackages(vm: string): Promise<VmPackages> {
    return this.request('GET', `/vms/${enc(vm)}/packages`);
  }
  approveVmPackages(vm: string, names?: string[]): Promise<VmPackages> {
    return this.request('POST', `/vms/${enc(vm)}/packages/approve`, { body: names ? { names } : {} });
  }
  vmcastFollows(): Promise<Page<VmcastFollow>> {
    return this.request('GET', '/vmcast/follows');
  }
  followChannel(vm: string, body: { channel: string; policy: 'auto' | 'notify' | 'pinned'; maintenanceWindow?: string }): Promise<VmcastFollow> {
    return this.request('PUT', `/vms/${enc(vm)}/follow`, { body });
  }
  unfollowChannel(vm: string): Promise<void> {
    return this.request('DELETE', `/vms/${enc(vm)}/follow`);
  }
  holdVm(vm: string, held: boolean): Promise<VmcastFollow> {
    return this.request('POST', `/vms/${enc(vm)}/follow/${held ? 'hold' : 'unhold'}`, { body: {} });
  }
  /** Starts a `vm.release-update` operation for the VM's pending update. */
  applyVmUpdate(vm: string): Promise<Operation> {
    return this.request('POST', `/vms/${enc(vm)}/follow/apply`, { body: {}, headers: { 'Idempotency-Key': idempotencyKey() } });
  }

  // ------------------------------------------------------------------ VMs
  vms(params: ListParams = {}): Promise<Page<Vm>> {
    return this.request('GET', '/vms', { query: { ...params } });
  }
  vm(id: string): Promise<Vm> {
    return this.request('GET', `/vms/${enc(id)}`);
  }
  createVm(body: VmCreate): Promise<Vm> {
    return this.request('POST', '/vms', { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  editVm(id: string, body: VmEdit, rev?: number): Promise<Vm> {
    return this.request('PATCH', `/vms/${enc(id)}`, { body, headers: rev === undefined ? {} : { 'If-Match': String(rev) } });
  }
  deleteVm(id: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** Marks the VM highly available or not (`PUT /vms/{id}/ha`); the manager refuses HA for a VM not on shared storage. */
  setVmHa(id: string, enabled: boolean): Promise<Vm> {
    return this.request('PUT', `/vms/${enc(id)}/ha`, { body: { enabled } });
  }
  vmAction(id: string, action: VmAction, body: Record<string, unknown> = {}): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/${action}`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  snapshots(id: string): Promise<SnapshotInfo[]> {
    return this.request('GET', `/vms/${enc(id)}/snapshots`);
  }
  createSnapshot(id: string, name: string): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/snapshots`, { body: { name }, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  revertSnapshot(id: string, name: string): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/snapshots/${enc(name)}/revert`, { body: {}, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  deleteSnapshot(id: string, name: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}/snapshots/${enc(name)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** The VM's disks as its host has them, in the guest's order (`[]` before its first start). */
  vmDisks(id: string): Promise<VmDiskInfo[]> {
    return this.request('GET', `/vms/${enc(id)}/disks`);
  }
  addVmDisk(id: string, body: VmDiskAdd): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/disks`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** `disk`: its index or its volume name. */
  removeVmDisk(id: string, disk: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}/disks/${enc(disk)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  vmNics(id: string): Promise<VmNicInfo[]> {
    return this.request('GET', `/vms/${enc(id)}/nics`);
  }
  addVmNic(id: string, body: VmNicAdd): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/nics`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** `nic`: its index or its MAC. */
  removeVmNic(id: string, nic: string): Promise<Operation> {
    return this.request('DELETE', `/vms/${enc(id)}/nics/${enc(nic)}`, { headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** Live migration (or a cold move of a stopped/saved VM) to another host: operation `vm.migrate`. */
  migrateVm(id: string, body: MigrateRequest): Promise<Operation> {
    return this.request('POST', `/vms/${enc(id)}/migrate`, { body, headers: { 'Idempotency-Key': idempotencyKey() } });
  }
  /** The serial log from `offset`; `next` is the offset to ask for next time. */
  async serialLog(id: string, offset = 0): Promise<{ text: string; next: number }> {
    const response = await this.raw('GET', `/vms/${enc(id)}/console/serial/log`, { query: { offset }, headers: { accept: 'text/plain' } });
    const text = await response.text();
    return { text, next: Number(response.headers.get('x-log-size') ?? offset) };
  }

  // ------------------------------------------------------------------ storage
  pools(host: string): Promise<PoolInfo[]> {
    return this.request('GET', `/hosts/${enc(host)}/pools`);
  }
  createPool(host: string, body: { name: string; path: string; shared?: boolean }): Promise<PoolInfo> {
    return this.request('POST', `/hosts/${enc(host)}/pools`, { body });
  }
  deletePool(host: string, pool: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(host)}/pools/${enc(pool)}`);
  }
  volumes(host: string, pool: string): Promise<VolumeInfo[]> {
    return this.request('GET', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes`);
  }
  createVolume(host: string, pool: string, body: { name: string; sizeBytes: number } | { name: string; cloneOf: string; sizeBytes?: number }): Promise<VolumeInfo> {
    return this.request('POST', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes`, { body });
  }
  resizeVolume(host: string, pool: string, volume: string, sizeBytes: number): Promise<VolumeInfo> {
    return this.request('POST', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes/${enc(volume)}/resize`, { body: { sizeBytes } });
  }
  deleteVolume(host: string, pool: string, volume: string): Promise<void> {
    return this.request('DELETE', `/hosts/${enc(host)}/pools/${enc(pool)}/volumes/${enc(volume)}`);
  }
  volumeContentUrl(host: string, pool: string, volume: string): string {
    return this.url(`/hosts/${enc(host)}/pools/${enc(pool)}/volumes/${enc(volume)}/content`);
  }

  // ------------------------------------------------------------------ operations
  operations(params: ListParams = {}): Promise<Page<Operation>> {
    return this.request('GET', '/operations', { query: { ...params } });
  }
  operation(id: string): Promise<Operation> {
    return this.request('GET', `/operations/${enc(id)}`);
  }
  cancelOperation(id: string): Promise<Operation> {
    return this.request('POST', `/operations/${enc(id)}/cancel`, { body: {} });
  }
}

export type VmAction = 'start' | 'stop' | 'force-off' | 'pause' | 'resume' | 'reset' | 'save' | 'restore';

function enc(segment: string): string {
  return encodeURIComponent(segment);
}

/** A fresh Idempotency-Key, so a retried click never acts twice. */
export function idempotencyKey(): string {
  return `web-${globalThis.crypto.randomUUID()}`;
}

/** Fetches every page of a list, up to `max` items. */
export async function listAll<T>(fetchPage: (params: ListParams) => Promise<Page<T>>, params: ListParams = {}, max = 5000): Promise<{ items: T[]; truncated: boolean }> {
  const items: T[] = [];
  let cursor: string | undefined;
  do {
    const page = await fetchPage({ ...params, limit: 1000, ...(cursor ? { cursor } : {}) });
    items.push(...page.items);
    cursor = page.next;
  } while (cursor && items.length < max);
  return { items, truncated: cursor !== undefined };
}

export const api = new ApiClient();
