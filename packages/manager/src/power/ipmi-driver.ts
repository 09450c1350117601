import { errors } from '@drover/core';
import { defaultPowerTimeoutMs, type IpmiPowerConfig, type PowerAction, type PowerDriver, type PowerState } from './power-driver.js';
import { lastLine, runCommand } from './run-command.js';

/**
 * IPMI over LAN through `ipmitool -I lanplus -C 3` (without `-C 3` each call
 * waits ~10 s for cipher negotiation). The password travels in the
 * environment (`-E`, IPMI_PASSWORD), not in argv where `ps` shows it.
 */
export class IpmiDriver implements PowerDriver {
  readonly kind = 'ipmi' as const;
  readonly supports: ReadonlySet<PowerAction> = new Set(['on', 'off', 'cycle', 'status']);

  constructor(private readonly config: IpmiPowerConfig) {}

  private async chassis(verb: 'on' | 'off' | 'cycle' | 'status'): Promise<string> {
    const { address, port, username, password } = this.config;
    const timeoutMs = this.config.timeoutMs ?? defaultPowerTimeoutMs;
    const args = ['-I', 'lanplus', '-C', '3', '-H', address, '-p', String(port ?? 623), '-U', username, '-E', '-N', '2', '-R', '2', 'chassis', 'power', verb];
    const what = `IPMI "chassis power ${verb}" on ${address}:${port ?? 623}`;
    const result = await runCommand('ipmitool', args, { timeoutMs, env: { IPMI_PASSWORD: password }, what });
    if (result.code !== 0) throw errors.unavailable(`${what} failed: ${lastLine(result.stderr) || lastLine(result.stdout) || `exit ${result.code}`}`, { driver: 'ipmi', exitCode: result.code });
    return result.stdout;
  }

  async status(): Promise<PowerState> {
    const out = await this.chassis('status');
    const match = /Chassis Power is (on|off)/i.exec(out);
    if (!match) throw errors.unavailable(`IPMI on ${this.config.address} answered the power status with something unreadable: "${lastLine(out)}"`, { driver: 'ipmi' });
    return match[1]!.toLowerCase() as PowerState;
  }

  async on(): Promise<void> {
    await this.chassis('on');
  }

  async off(): Promise<void> {
    await this.chassis('off');
  }

  async cycle(): Promise<void> {
    await this.chassis('cycle');
  }
}
