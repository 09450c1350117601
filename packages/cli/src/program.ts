import type { Command } from 'commander';
import { Cli, type CliContext } from './cli.js';
import { registerAccessCommands } from './commands/access.js';
import { registerClusterCommands } from './commands/cluster.js';
import { registerCompletionCommands } from './commands/completion.js';
import { registerConfigCommands } from './commands/config.js';
import { registerHostCommands } from './commands/host.js';
import { registerImageCommands } from './commands/image.js';
import { registerLabCommands } from './commands/lab.js';
import { registerNetworkCommands } from './commands/network.js';
import { registerPackageCommands } from './commands/package.js';
import { registerOperationCommands } from './commands/op.js';
import { registerPolicyCommands } from './commands/policy.js';
import { registerPowerCommands, registerVmHaCommand } from './commands/power.js';
import { registerStorageCommands } from './commands/storage.js';
import { registerVmCommands } from './commands/vm.js';
import { registerVmDeviceCommands } from './commands/vm-devices.js';
import { registerVmcastCommands } from './commands/vmcast.js';

/**
 * The whole `drover` command tree. `extend` adds commands that live outside the
 * API client (main.ts adds `up` and `down` there) before the API nouns, so they
 * come first in the help.
 */
export function createCli(ctx: CliContext, extend?: (program: Command) => void): Cli {
  const cli = new Cli(ctx, extend);
  const vm = registerVmCommands(cli);
  registerVmDeviceCommands(cli, vm);
  registerVmcastCommands(cli, vm);
  registerVmHaCommand(cli, vm);
  registerHostCommands(cli);
  registerImageCommands(cli);
  registerPackageCommands(cli);
  registerLabCommands(cli);
  registerNetworkCommands(cli);
  registerStorageCommands(cli);
  registerOperationCommands(cli);
  registerPowerCommands(cli);
  registerClusterCommands(cli);
  registerAccessCommands(cli);
  registerPolicyCommands(cli);
  registerConfigCommands(cli);
  registerCompletionCommands(cli);
  return cli;
}

/** The context of the real process: its streams, its environment, Ctrl-C. */
export function processContext(): CliContext {
  // `drover vm list | head -1`: the reader left, so there is nothing more to say.
  process.stdout.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
  return {
    env: process.env,
    stdout: process.stdout,
    stderr: process.stderr,
    // Lazy: touching process.stdin opens it, which a command that never reads should not do.
    stdin: { [Symbol.asyncIterator]: () => process.stdin[Symbol.asyncIterator]() },
    setRawMode: process.stdin.isTTY ? (on) => process.stdin.setRawMode(on) : undefined,
    watchInterrupts: () => {
      const controller = new AbortController();
      let count = 0;
      // First Ctrl-C: stop waiting or following, cleanly. Second: leave at once.
      const onInterrupt = () => {
        count += 1;
        if (count > 1) process.exit(130);
        controller.abort();
      };
      process.on('SIGINT', onInterrupt);
      return { signal: controller.signal, dispose: () => process.off('SIGINT', onInterrupt) };
    },
  };
}
