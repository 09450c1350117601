import { errors } from '@drover/core';
import { CommandDriver } from './command-driver.js';
import { IpmiDriver } from './ipmi-driver.js';
import { unsupported, validatePowerConfig, type PowerAction, type PowerConfig, type PowerDriver, type PowerState } from './power-driver.js';
import { WolDriver } from './wol-driver.js';

export function createPowerDriver(config: PowerConfig, host: { id: string; name: string }): PowerDriver {
  validatePowerConfig(config);
  switch (config.driver) {
    case 'ipmi':
      return new IpmiDriver(config);
    case 'wol':
      return new WolDriver(config);
    case 'command':
      return new CommandDriver(config, host);
  }
}

export interface PowerOutcome {
  action: PowerAction;
  /** The state read back after the action (`unknown` where the driver cannot tell). */
  state: PowerState;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Does a power action and checks it with the driver's own status: a driver
 * that says it switched a host off while its status still says `on` after
 * `verifyMs` is lying, and the answer is an error naming both, never a
 * success. A cycle must end `on`; a BMC that leaves the chassis off after a
 * cycle (ipmi_sim does) gets an explicit `on` once the grace period is over.
 */
export async function applyPower(driver: PowerDriver, action: PowerAction, options: { hostName: string; verifyMs?: number; pollMs?: number; cycleGraceMs?: number }): Promise<PowerOutcome> {
  if (!driver.supports.has(action)) unsupported(driver.kind, action);
  const verifyMs = options.verifyMs ?? 30_000;
  const pollMs = options.pollMs ?? 500;
  if (action === 'status') return { action, state: await driver.status() };
  const canTell = driver.supports.has('status');
  if (action === 'on') await driver.on();
  else if (action === 'off') await driver.off();
  else await driver.cycle();
  if (!canTell) return { action, state: 'unknown' };
  const want: PowerState = action === 'off' ? 'off' : 'on';
  let state = await driver.status();
  let nudged = action !== 'cycle';
  let deadline = Date.now() + (action === 'cycle' ? Math.min(verifyMs, options.cycleGraceMs ?? 5_000) : verifyMs);
  while (state !== want) {
    if (Date.now() > deadline) {
      if (!nudged) {
        nudged = true;
        deadline = Date.now() + verifyMs;
        await driver.on();
        state = await driver.status();
        continue;
      }
      throw errors.unavailable(`The ${driver.kind} power driver of host "${options.hostName}" reported "${action}" done, but the host's power is still ${state} after ${verifyMs} ms`, { driver: driver.kind, action, state });
    }
    await sleep(pollMs);
    state = await driver.status();
  }
  return { action, state };
}
