import type { ApiClient } from '../src/api/client.js';

/**
 * Every operation of the manager's OpenAPI document, mapped either to the
 * console control that performs it or to the list of API-only operations with
 * the reason. browser.test.ts checks the map against the live document (a new
 * route fails the test until it is placed here), calls each client method to
 * see that it reaches that very route, and checks that the console's pages
 * call the method.
 */

type ClientMethod = { [K in keyof ApiClient]: ApiClient[K] extends (...args: never[]) => unknown ? K : never }[keyof ApiClient];

export interface UiOperation {
  /** Where an operator finds it. */
  control: string;
  /** The ApiClient method the control calls, and arguments to call it with in the test. */
  client: ClientMethod;
  args: unknown[];
  /** `url`: the method returns the route's URL (a link, an XHR upload) instead of calling it. */
  via?: 'url';
  /** A string that must appear in the console's sources, for calls made outside ApiClient. */
  source?: string;
}

export const uiOperations: Record<string, UiOperation> = {
  'POST /api/v1/sessions': { control: 'Login page: Log in', client: 'login', args: ['t'] },
  'GET /api/v1/session': { control: 'Console start: am I logged in?', client: 'session', args: [] },
  'DELETE /api/v1/session': { control: 'Header: Log out', client: 'logout', args: [] },
  'POST /api/v1/tickets': { control: 'VM page: serial console and VNC screen (one ticket per WebSocket)', client: 'socketUrl', args: ['/vms/v/console/vnc'] },

  'GET /api/v1/users': { control: 'Access, Users: Users table', client: 'users', args: [] },
  'POST /api/v1/users': { control: 'Access, Users: Add user', client: 'createUser', args: [{ name: 'u', bindings: [{ role: 'auditor', scope: '*' }] }] },
  'PATCH /api/v1/users/{name}': { control: 'Access, Users: Disable / Enable <user>', client: 'editUser', args: ['u', { disabled: true }] },
  'DELETE /api/v1/users/{name}': { control: 'Access, Users: Delete <user>', client: 'deleteUser', args: ['u'] },
  'GET /api/v1/roles': { control: 'Access, Roles: Roles table; Users: Role', client: 'roles', args: [] },
  'POST /api/v1/roles': { control: 'Access, Roles: Add role', client: 'createRole', args: [{ name: 'r', permissions: ['vm.read'] }] },
  'DELETE /api/v1/roles/{name}': { control: 'Access, Roles: Delete role <role>', client: 'deleteRole', args: ['r'] },
  'GET /api/v1/projects': { control: 'Access, Users: Projects table', client: 'projects', args: [] },
  'POST /api/v1/projects': { control: 'Access, Users: Add project', client: 'createProject', args: [{ name: 'p' }] },
  'DELETE /api/v1/projects/{name}': { control: 'Access, Users: Delete project <project>', client: 'deleteProject', args: ['p'] },
  'GET /api/v1/tokens': { control: 'Access, API tokens: Tokens table', client: 'tokens', args: [] },
  'POST /api/v1/tokens': { control: 'Access, API tokens: Make token', client: 'createToken', args: [{ name: 't' }] },
  'DELETE /api/v1/tokens/{id}': { control: 'Access, API tokens: Revoke <token>', client: 'revokeToken', args: ['0a0b'] },
  'GET /api/v1/audit': { control: 'Access, Audit log: records and Filter', client: 'audit', args: [{ actor: 'a' }] },
  'GET /api/v1/audit/export': { control: 'Access, Audit log: Export as JSON lines (a link)', client: 'auditExportUrl', args: [{}], via: 'url' },
  'GET /api/v1/audit/verify': { control: 'Access, Audit log: Verify the chain', client: 'verifyAudit', args: [] },

  'GET /api/v1/hosts': { control: 'Dashboard: Hosts; Hosts page; Storage: Host', client: 'hosts', args: [] },
  'DELETE /api/v1/hosts/{id}': { control: 'Hosts page: Remove…', client: 'removeHost', args: ['h1'] },
  'POST /api/v1/hosts/{id}/rotate-certificate': { control: 'Hosts page: Rotate certificate', client: 'rotateCertificate', args: ['h1'] },
  'POST /api/v1/hosts/join-tokens': { control: 'Hosts page: Add a host…', client: 'joinToken', args: [3600] },
  'POST /api/v1/hosts/{id}/maintenance': { control: 'Hosts page: Maintenance', client: 'enterMaintenance', args: ['h1'] },
  'POST /api/v1/hosts/{id}/evacuate': { control: 'Hosts page: Evacuate… (plan first, then Evacuate)', client: 'evacuateHost', args: ['h1', { dryRun: true }] },
  'POST /api/v1/hosts/{id}/restore': { control: 'Hosts page: Restore… (list first, then Restore)', client: 'restoreHost', args: ['h1', { dryRun: true }] },
  'GET /api/v1/hosts/{id}/power': { control: 'Hosts page: Power… (current driver settings)', client: 'hostPower', args: ['h1'] },
  'PUT /api/v1/hosts/{id}/power': { control: 'Hosts page: Power…, Save power settings', client: 'setHostPower', args: ['h1', { driver: 'command', on: 'true', off: 'true', status: 'echo on' }] },
  'DELETE /api/v1/hosts/{id}/power': { control: 'Hosts page: Power…, Remove power settings', client: 'removeHostPower', args: ['h1'] },
  'POST /api/v1/hosts/{id}/power/{action}': { control: 'Hosts page: Power…, Power status / on / off / cycle', client: 'powerHost', args: ['h1', 'status'] },
  'GET /api/v1/power/policy': { control: 'Hosts page: Power policy form', client: 'powerPolicy', args: [] },
  'PUT /api/v1/power/policy': { control: 'Hosts page: Power policy, Save power policy', client: 'setPowerPolicy', args: [{ enabled: false, timeZone: 'UTC', window: '22:00-06:00', spareHosts: 1, wattsPerHost: 200, reserveMemoryPercent: 10, headroomPercent: 10 }] },
  'GET /api/v1/power/report': { control: 'Hosts page: Power policy report (hosts off, hours, energy)', client: 'powerReport', args: [] },
  'POST /api/v1/power/night-plan': { control: 'Hosts page: Preview night plan / Run night plan now', client: 'runNightPlan', args: [{ dryRun: true }] },
  'POST /api/v1/power/wake': { control: 'Hosts page: Wake all hosts', client: 'wakeHosts', args: [{ dryRun: true }] },
  'POST /api/v1/cluster/rebalance': { control: 'Hosts page: Rebalance, Preview rebalance / Rebalance now', client: 'rebalance', args: [{ dryRun: true }] },

  'GET /api/v1/hosts/{id}/pools': { control: 'Storage: Pools on <host>', client: 'pools', args: ['h1'] },
  'POST /api/v1/hosts/{id}/pools': { control: 'Storage: Add pool…', client: 'createPool', args: ['h1', { name: 'p', path: '/p' }] },
  'DELETE /api/v1/hosts/{id}/pools/{pool}': { control: 'Storage: pool Delete', client: 'deletePool', args: ['h1', 'p'] },
  'GET /api/v1/hosts/{id}/pools/{pool}/volumes': { control: 'Storage: Volumes in <pool>', client: 'volumes', args: ['h1', 'p'] },
  'POST /api/v1/hosts/{id}/pools/{pool}/volumes': { control: 'Storage: Create volume…', client: 'createVolume', args: ['h1', 'p', { name: 'v', sizeBytes: 1048576 }] },
  'POST /api/v1/hosts/{id}/pools/{pool}/volumes/{volume}/resize': { control: 'Storage: volume Resize', client: 'resizeVolume', args: ['h1', 'p', 'v', 2097152] },
  'DELETE /api/v1/hosts/{id}/pools/{pool}/volumes/{volume}': { control: 'Storage: volume Delete', client: 'deleteVolume', args: ['h1', 'p', 'v'] },
  'GET /api/v1/hosts/{id}/pools/{pool}/volumes/{volume}/content': { control: 'Storage: volume Download (a link)', client: 'volumeContentUrl', args: ['h1', 'p', 'v'], via: 'url' },
  'PUT /api/v1/hosts/{id}/pools/{pool}/volumes/{volume}/content': { control: 'Storage: Upload… (XHR, for progress)', client: 'volumeContentUrl', args: ['h1', 'p', 'v'], via: 'url', source: "xhr.open('PUT'" },

  'GET /api/v1/images': { control: 'Images page: Library; Create VM dialog: Image and ISO', client: 'images', args: [] },
  'POST /api/v1/images': { control: 'Images page: Import… (with live progress and Cancel import)', client: 'importImage', args: [{ name: 'i', source: { url: 'http://127.0.0.1/i.qcow2' } }] },

  'GET /api/v1/vmcast/keys': { control: 'Feeds page: Publisher keys', client: 'vmcastKeys', args: [] },
  'POST /api/v1/vmcast/keys': { control: 'Feeds page: Create key (rotates)', client: 'createVmcastKey', args: ['k'] },
  'POST /api/v1/vmcast/keys/{id}/revoke': { control: 'Feeds page: key Revoke', client: 'revokeVmcastKey', args: ['k'] },
  'GET /api/v1/vmcast/channels': { control: 'Feeds page: Published channels', client: 'vmcastChannels', args: [] },
  'POST /api/v1/vmcast/channels': { control: 'Feeds page: Create channel', client: 'createVmcastChannel', args: [{ name: 'c' }] },
  'GET /api/v1/vmcast/channels/{channel}/releases': { control: 'Feeds page: channel Releases', client: 'vmcastChannelReleases', args: ['c'] },
  'POST /api/v1/vmcast/channels/{channel}/releases': { control: 'Feeds page: channel Publish', client: 'publishVmcastRelease', args: ['c', { image: 'i:1' }] },
  'GET /api/v1/vmcast/channels/{channel}/feed.rss': { control: 'Feeds page: channel RSS (a link)', client: 'vmcastFeedUrl', args: ['c'], via: 'url' },
  'GET /api/v1/vmcast/channels/{channel}/catalog.json': { control: 'Feeds page: channel JSON catalog (a link)', client: 'vmcastCatalogUrl', args: ['c'], via: 'url' },
  'GET /api/v1/vmcast/subscriptions': { control: 'Feeds page: Subscriptions', client: 'vmcastSubscriptions', args: [] },
  'POST /api/v1/vmcast/subscriptions': { control: 'Feeds page: Subscribe', client: 'subscribeVmcast', args: [{ name: 's', url: 'http://127.0.0.1/f.rss', pinnedKeys: ['x'.repeat(64)] }] },
  'DELETE /api/v1/vmcast/subscriptions/{id}': { control: 'Feeds page: Unsubscribe', client: 'unsubscribeVmcast', args: ['s'] },
  'POST /api/v1/vmcast/subscriptions/{id}/poll': { control: 'Feeds page: Poll now', client: 'pollVmcast', args: ['s'] },
  'POST /api/v1/vmcast/subscriptions/{id}/keys/{keyId}/revoke': { control: 'Feeds page: Revoke pin', client: 'revokePinnedKey', args: ['s', '0'.repeat(64)] },
  'GET /api/v1/vmcast/subscriptions/{id}/releases': { control: 'Feeds page: subscription Releases', client: 'vmcastSubscriptionReleases', args: ['s'] },
  'GET /api/v1/vmcast/follows': { control: 'Feeds page: VMs following a channel', client: 'vmcastFollows', args: [] },
  'PUT /api/v1/vms/{id}/follow': { control: 'Feeds page: Follow', client: 'followChannel', args: ['v', { channel: 's', policy: 'notify' }] },
  'DELETE /api/v1/vms/{id}/follow': { control: 'Feeds page: Unfollow', client: 'unfollowChannel', args: ['v'] },
  'POST /api/v1/vms/{id}/follow/hold': { control: 'Feeds page: Hold', client: 'holdVm', args: ['v', true] },
  'POST /api/v1/vms/{id}/follow/unhold': { control: 'Feeds page: Release hold', client: 'holdVm', args: ['v', false] },
  'POST /api/v1/vms/{id}/follow/apply': { control: 'Feeds page: Apply update', client: 'applyVmUpdate', args: ['v'] },
  'DELETE /api/v1/images/{id}': { control: 'Images page: Delete…', client: 'deleteImage', args: ['i:1'] },

  'GET /api/v1/vms': { control: 'VM list; Dashboard: VMs', client: 'vms', args: [] },
  'POST /api/v1/vms': { control: 'Create VM dialog', client: 'createVm', args: [{ name: 'v', image: 'web' }] },
  'GET /api/v1/vms/{id}': { control: 'VM page', client: 'vm', args: ['v'] },
  'PATCH /api/v1/vms/{id}': { control: 'VM page: Edit, Save changes', client: 'editVm', args: ['v', { cpus: 2 }, 1] },
  'DELETE /api/v1/vms/{id}': { control: 'VM page: Delete…', client: 'deleteVm', args: ['v'] },
  'POST /api/v1/vms/{id}/start': { control: 'VM page: Start; Create VM dialog: Start it now', client: 'vmAction', args: ['v', 'start'] },
  'POST /api/v1/vms/{id}/stop': { control: 'VM page: Stop', client: 'vmAction', args: ['v', 'stop'] },
  'POST /api/v1/vms/{id}/force-off': { control: 'VM page: Force off', client: 'vmAction', args: ['v', 'force-off'] },
  'POST /api/v1/vms/{id}/pause': { control: 'VM page: Pause', client: 'vmAction', args: ['v', 'pause'] },
  'POST /api/v1/vms/{id}/resume': { control: 'VM page: Resume', client: 'vmAction', args: ['v', 'resume'] },
  'POST /api/v1/vms/{id}/reset': { control: 'VM page: Reset', client: 'vmAction', args: ['v', 'reset'] },
  'POST /api/v1/vms/{id}/save': { control: 'VM page: Save', client: 'vmAction', args: ['v', 'save'] },
  'POST /api/v1/vms/{id}/restore': { control: 'VM page: Restore', client: 'vmAction', args: ['v', 'restore'] },
  'POST /api/v1/vms/{id}/migrate': { control: 'VM page: Migrate… (destination, copy local disks, downtime, bandwidth; live progress and Cancel migration)', client: 'migrateVm', args: ['v', { to: 'h2' }] },
  'GET /api/v1/vms/{id}/snapshots': { control: 'VM page: Snapshots', client: 'snapshots', args: ['v'] },
  'POST /api/v1/vms/{id}/snapshots': { control: 'VM page: Create snapshot', client: 'createSnapshot', args: ['v', 's'] },
  'POST /api/v1/vms/{id}/snapshots/{snapshot}/revert': { control: 'VM page: snapshot Revert', client: 'revertSnapshot', args: ['v', 's'] },
  'DELETE /api/v1/vms/{id}/snapshots/{snapshot}': { control: 'VM page: snapshot Delete', client: 'deleteSnapshot', args: ['v', 's'] },
  'GET /api/v1/vms/{id}/disks': { control: 'VM page: Disks and network, Disks', client: 'vmDisks', args: ['v'] },
  'POST /api/v1/vms/{id}/disks': { control: 'VM page: Add disk…', client: 'addVmDisk', args: ['v', { sizeBytes: 1048576 }] },
  'DELETE /api/v1/vms/{id}/disks/{disk}': { control: 'VM page: disk Remove…', client: 'removeVmDisk', args: ['v', 'd.qcow2'] },
  'GET /api/v1/vms/{id}/nics': { control: 'VM page: Disks and network, Network interfaces', client: 'vmNics', args: ['v'] },
  'POST /api/v1/vms/{id}/nics': { control: 'VM page: Add NIC…', client: 'addVmNic', args: ['v', {}] },
  'DELETE /api/v1/vms/{id}/nics/{nic}': { control: 'VM page: NIC Remove…', client: 'removeVmNic', args: ['v', '52:54:00:00:00:01'] },
  'GET /api/v1/vms/{id}/console/serial/log': { control: 'VM page: Serial console (what the guest printed before)', client: 'serialLog', args: ['v'] },

  'GET /api/v1/operations': { control: 'Operations page; Dashboard: Running operations', client: 'operations', args: [] },
  'GET /api/v1/operations/{id}': { control: 'Operations page: an operation (?focus=)', client: 'operation', args: ['o'] },
  'POST /api/v1/operations/{id}/cancel': { control: 'Operations page: Cancel', client: 'cancelOperation', args: ['o'] },
  'GET /api/v1/policy': { control: 'Policy page: Active policy (types, conflict sets, labels)', client: 'policy', args: [] },
  'PUT /api/v1/policy': { control: 'Policy page: Load policy', client: 'loadPolicy', args: [{ document: 'name: p' }] },
  'POST /api/v1/policy/validate': { control: 'Policy page: Validate', client: 'validatePolicy', args: [{ document: 'name: p' }] },
  'GET /api/v1/policy/export': { control: 'Policy page: Export as XML / YAML / JSON (links)', client: 'policyExportUrl', args: ['xml'], via: 'url' },
  'GET /api/v1/policy/labels': { control: 'Policy page: Labels of hosts and resources', client: 'policyLabels', args: [] },
  'PUT /api/v1/policy/labels': { control: 'Policy page: Set label / Remove', client: 'setPolicyLabel', args: ['host', 'h1', null] },
  'GET /api/v1/policy/explain': { control: 'Policy page: Explain a placement', client: 'explainPolicy', args: ['v', 'h1'] },
  'GET /api/v1/events': { control: 'Every page: live updates (EventSource)', client: 'url', args: ['/events'], via: 'url', source: "api.url('/events')" },
};

/** Operations the console does not offer, and why. */
export const apiOnlyOperations: Record<string, string> = {
  'GET /api/v1/users/{name}': 'the Users page lists every user with all its fields',
  'GET /api/v1/roles/{name}': 'the Roles page lists every role with all its fields',
  'PATCH /api/v1/roles/{name}': 'custom roles are changed with drover role or the API; the console adds and deletes them',
  'GET /api/v1/projects/{name}': 'the Users page lists every project with its quota and usage',
  'PATCH /api/v1/projects/{name}': 'quotas are changed with drover project edit or the API; the console adds and deletes projects',
  'POST /api/v1/hosts/join': 'called by drover-agent --join with a one-time token, never by a person',
  'GET /api/v1/hosts/{id}': 'the Hosts page lists every host with all its fields',
  'GET /api/v1/hosts/{id}/pools/{pool}': 'the Storage page lists every pool with all its fields',
  'GET /api/v1/hosts/{id}/pools/{pool}/volumes/{volume}': 'the Storage page lists every volume with all its fields',
  'GET /api/v1/images/{id}': 'the Images page lists every image with all its fields',
  'PUT /api/v1/vms/{id}/ha': 'HA is marked through the API (docs/maintenance-and-power.md); the VM page shows it in the spec but has no switch yet',
  'GET /api/v1/vmcast/channels/{channel}/releases/{name}/{version}/image': "a release's image, the feed's enclosure: downloaded by subscribing managers (public, with HTTP ranges), not by a person",
};
