import { errors } from '@drover/core';

/** A host's power as its driver reports it. */
export type PowerState = 'on' | 'off' | 'unknown';
export type PowerAction = 'on' | 'off' | 'cycle' | 'status';

/**
 * IPMI over LAN with ipmitool (lanplus, cipher suite 3). The password is a
 * secret: it is handed to ipmitool in its environment (`-E`), never on the
 * command line, and never returned by the API.
 */
export interface IpmiPowerConfig {
  driver: 'ipmi';
  address: string;
  port?: number;
  username: string;
  password: string;
  timeoutMs?: number;
}

/** Wake-on-LAN: on only, a magic packet sent as a directed UDP packet to `address:port`. */
export interface WolPowerConfig {
  driver: 'wol';
  mac: string;
  /** The directed broadcast address of the host's subnet (or the host's own address, with a static ARP entry on the way). */
  address: string;
  port?: number;
  timeoutMs?: number;
}

/**
 * Any shell command (`ssh bmc ...`, a PDU's CLI): `status` must print `on` or
 * `off`; `on` and `off` must exit 0. DROVER_HOST_ID and DROVER_HOST_NAME are set.
 */
export interface CommandPowerConfig {
  driver: 'command';
  on: string;
  off: string;
  status: string;
  timeoutMs?: number;
}

export type PowerConfig = IpmiPowerConfig | WolPowerConfig | CommandPowerConfig;

export interface PowerDriver {
  readonly kind: PowerConfig['driver'];
  /** Which actions this driver can do (Wake-on-LAN: only `on`). */
  readonly supports: ReadonlySet<PowerAction>;
  status(): Promise<PowerState>;
  on(): Promise<void>;
  off(): Promise<void>;
  cycle(): Promise<void>;
}

export const defaultPowerTimeoutMs = 15_000;

/** The refusal of an action a driver cannot do, named clearly. */
export function unsupported(kind: string, action: PowerAction): never {
  throw errors.invalid(`The ${kind} power driver cannot "${action}"`, { driver: kind, action });
}

const macPattern = /^([0-9a-f]{2}[:-]){5}[0-9a-f]{2}$/i;

/** Checks a power configuration (what `PUT .../power` stores); `invalid` naming the bad field. */
export function validatePowerConfig(config: PowerConfig): void {
  const timeout = config.timeoutMs;
  if (timeout !== undefined && (!Number.isInteger(timeout) || timeout < 100 || timeout > 600_000)) {
    throw errors.invalid(`Power driver timeout must be 100–600000 ms, got "${timeout}"`, { field: 'timeoutMs' });
  }
  switch (config.driver) {
    case 'ipmi':
      if (!config.address) throw errors.invalid('IPMI needs the BMC address', { field: 'address' });
      if (!config.username) throw errors.invalid('IPMI needs a user name', { field: 'username' });
      if (/[\s'"`$;&|<>]/.test(config.address)) throw errors.invalid(`Invalid BMC address "${config.address}"`, { field: 'address' });
      break;
    case 'wol':
      if (!macPattern.test(config.mac)) throw errors.invalid(`Invalid MAC address "${config.mac}"`, { field: 'mac' });
      if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(config.address)) throw errors.invalid(`Wake-on-LAN needs an IPv4 address, got "${config.address}"`, { field: 'address' });
      break;
    case 'command':
      for (const key of ['on', 'off', 'status'] as const) {
        if (!config[key]?.trim()) throw errors.invalid(`The command power driver needs a "${key}" command`, { field: key });
      }
      break;
    default:
      throw errors.invalid(`Unknown power driver "${(config as { driver: string }).driver}"`, { field: 'driver' });
  }
}

/** The MAC's six bytes. */
export function macBytes(mac: string): Buffer {
  if (!macPattern.test(mac)) throw errors.invalid(`Invalid MAC address "${mac}"`, { field: 'mac' });
  return Buffer.from(mac.split(/[:-]/).map((part) => parseInt(part, 16)));
}
