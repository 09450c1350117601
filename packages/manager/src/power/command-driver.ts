import { errors } from '@drover/core';
import { defaultPowerTimeoutMs, type CommandPowerConfig, type PowerAction, type PowerDriver, type PowerState } from './power-driver.js';
import { lastLine, runCommand } from './run-command.js';

/**
 * Shell commands for on, off and status (run with /bin/sh -c, in their own
 * process group, killed at the time limit). `status` must print `on` or `off`
 * as its first word; anything else is an error, never a guess.
 */
export class CommandDriver implements PowerDriver {
  readonly kind = 'command' as const;
  readonly supports: ReadonlySet<PowerAction> = new Set(['on', 'off', 'cycle', 'status']);

  constructor(
    private readonly config: CommandPowerConfig,
    private readonly host: { id: string; name: string },
  ) {}

  private async run(action: 'on' | 'off' | 'status'): Promise<string> {
    const what = `The "${action}" power command of host "${this.host.name}"`;
    const result = await runCommand('/bin/sh', ['-c', this.config[action]], {
      timeoutMs: this.config.timeoutMs ?? defaultPowerTimeoutMs,
      env: { DROVER_HOST_ID: this.host.id, DROVER_HOST_NAME: this.host.name },
      what,
    });
    if (result.code !== 0) throw errors.unavailable(`${what} failed with exit ${result.code}${lastLine(result.stderr) ? `: ${lastLine(result.stderr)}` : ''}`, { driver: 'command', exitCode: result.code });
    return result.stdout;
  }

  async status(): Promise<PowerState> {
    const out = await this.run('status');
    const word = out.trim().split(/\s+/)[0]?.toLowerCase();
    if (word !== 'on' && word !== 'off') throw errors.unavailable(`The status power command of host "${this.host.name}" printed "${lastLine(out)}"; it must print "on" or "off"`, { driver: 'command' });
    return word;
  }

  async on(): Promise<void> {
    await this.run('on');
  }

  async off(): Promise<void> {
    await this.run('off');
  }

  /** Off, then on: a shell command has no cycle of its own. */
  async cycle(): Promise<void> {
    await this.run('off');
    await this.run('on');
  }
}
