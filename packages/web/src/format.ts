import { InputError } from './api/client.js';
import type { ManagedVmState, Operation } from './api/types.js';

const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; whole numbers without decimals. */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 0) return '—';
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  const text = Number.isInteger(value) ? String(value) : value.toFixed(value >= 100 ? 0 : 1);
  return `${text} ${units[unit]}`;
}

export function formatMiB(mib: number): string {
  return formatBytes(mib * 1024 * 1024);
}

/**
 * "256M", "1.5G", "2 GiB", "1048576" (bytes) → bytes; undefined when unreadable.
 * Suffixes are binary (K = KiB), like the CLI's sizes.
 */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*([kmgtp]?)(?:i?b)?\s*$/i.exec(text);
  if (!match) return undefined;
  const power = ' kmgtp'.indexOf((match[2] || ' ').toLowerCase());
  const bytes = Number(match[1]) * 1024 ** Math.max(0, power);
  return Number.isFinite(bytes) ? Math.round(bytes) : undefined;
}

export function percent(part: number, whole: number): number {
  if (!whole || whole <= 0) return 0;
  return Math.max(0, Math.min(100, Math.round((part / whole) * 100)));
}

/** "3 s ago", "5 min ago", or a date for older times. */
export function ago(iso: string | null | undefined, now = Date.now()): string {
  if (!iso) return 'never';
  const then = Date.parse(iso);
  if (Number.isNaN(then)) return iso;
  const seconds = Math.round((now - then) / 1000);
  if (seconds < 0) return `in ${formatDuration(-seconds)}`;
  if (seconds < 5) return 'just now';
  if (seconds < 24 * 3600) return `${formatDuration(seconds)} ago`;
  return new Date(then).toLocaleString();
}

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds} s`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 48 * 3600) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} days`;
}

export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '—';
  const time = Date.parse(iso);
  return Number.isNaN(time) ? iso : new Date(time).toLocaleString();
}

// ------------------------------------------------------------------ VM states and actions

export const vmStateList: readonly ManagedVmState[] = ['defined', 'starting', 'running', 'paused', 'saving', 'saved', 'stopping', 'stopped', 'migrating', 'error'];

/** The manager's `allowed` table (docs/api.md, VMs): which action each state permits. */
export const allowedActions = {
  start: ['defined', 'stopped', 'error'],
  stop: ['running', 'paused'],
  'force-off': ['running', 'paused', 'starting', 'stopping', 'error'],
  pause: ['running'],
  resume: ['paused'],
  reset: ['running'],
  save: ['running', 'paused'],
  restore: ['saved'],
  delete: ['defined', 'stopped', 'saved', 'error'],
  snapshot: ['running', 'paused', 'stopped'],
  edit: ['defined', 'stopped'],
  // Disks and NICs (hotplug): a paused guest cannot release a device.
  'device-add': ['running', 'paused', 'stopped'],
  'device-remove': ['running', 'stopped'],
  // Live migration; a stopped or saved VM is moved cold (docs/migration.md).
  migrate: ['running', 'paused', 'stopped', 'saved'],
} as const satisfies Record<string, readonly ManagedVmState[]>;

export type VmActionName = keyof typeof allowedActions;

export function canDo(action: VmActionName, state: string): boolean {
  return (allowedActions[action] as readonly string[]).includes(state);
}

/** States that are on the way somewhere: shown with a busy marker. */
export function isTransient(state: string): boolean {
  return state === 'starting' || state === 'stopping' || state === 'saving' || state === 'migrating';
}

export function isActive(op: Pick<Operation, 'state'>): boolean {
  return op.state === 'pending' || op.state === 'running';
}

/** The later of two views of one operation (an ended one wins a tie). */
export function newerOperation(old: Operation | undefined, next: Operation): Operation {
  if (!old || old.id !== next.id) return next;
  if (next.updatedAt > old.updatedAt) return next;
  if (next.updatedAt === old.updatedAt && isActive(old) && !isActive(next)) return next;
  return old;
}

/** A headline in plain words for how an operation ended, by its kind and error code. */
export function operationFailureTitle(op: Operation): string {
  if (op.state === 'cancelled' || op.error?.code === 'cancelled') return 'Cancelled';
  const code = op.error?.code;
  if (op.kind === 'image.import') {
    if (code === 'invalid') return 'The image was refused';
    if (code === 'not_found') return 'There is nothing to download at that address';
    if (code === 'too_large') return 'The image is too large';
    if (code === 'timeout') return 'The download took too long';
    if (code === 'unavailable') return 'The download failed';
    if (code === 'forbidden') return 'That file may not be imported';
  }
  if (code === 'conflict') return op.state === 'rolled_back' ? 'Not possible right now; nothing was changed' : 'Not possible right now';
  if (code === 'timeout') return 'Timed out';
  if (code === 'unavailable') return 'The host could not do it';
  return op.state === 'rolled_back' ? 'Failed; nothing was changed' : 'Failed';
}

const kindNames: Record<string, string> = {
  'vm.start': 'Start',
  'vm.stop': 'Stop',
  'vm.force-off': 'Force off',
  'vm.pause': 'Pause',
  'vm.resume': 'Resume',
  'vm.reset': 'Reset',
  'vm.save': 'Save',
  'vm.restore': 'Restore',
  'vm.delete': 'Delete',
  'vm.snapshot.create': 'Create snapshot',
  'vm.snapshot.revert': 'Revert to snapshot',
  'vm.snapshot.delete': 'Delete snapshot',
  'vm.disk.add': 'Add disk',
  'vm.disk.remove': 'Remove disk',
  'vm.nic.add': 'Add NIC',
  'vm.nic.remove': 'Remove NIC',
  'vm.migrate': 'Migrate',
  'host.rotate-certificate': 'Rotate certificate',
  'image.import': 'Import image',
  'image.delete': 'Delete image',
};

export function operationTitle(kind: string): string {
  return kindNames[kind] ?? kind;
}

/** "key=value, k2=v2" → labels; throws with a readable message on a bad entry. */
export function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const part of text.split(/[,\n]/)) {
    const entry = part.trim();
    if (!entry) continue;
    const eq = entry.indexOf('=');
    if (eq <= 0) throw new InputError(`Label "${entry}" is not key=value`);
    labels[entry.slice(0, eq).trim()] = entry.slice(eq + 1).trim();
  }
  return labels;
}

export function formatLabels(labels: Record<string, string>): string {
  return Object.entries(labels).map(([k, v]) => `${k}=${v}`).join(', ');
}
