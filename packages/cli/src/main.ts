#!/usr/bin/env node
import { Option, type Command } from 'commander';
import { exitCodeOf, isDroverError } from '@drover/core';
import { createCli, processContext } from './program.js';
import { defaultDataDir, down, up } from './up.js';
import { registerAdminCommands } from './admin.js';

function fail(error: unknown, json: boolean): never {
  if (isDroverError(error)) {
    if (json) process.stderr.write(`${JSON.stringify({ error: error.toJSON() })}\n`);
    else process.stderr.write(`drover: ${error.message}\n`);
    process.exit(exitCodeOf(error.code));
  }
  process.stderr.write(`drover: unexpected error: ${(error as Error).stack ?? String(error)}\n`);
  process.exit(1);
}

/** `drover up` / `drover down`: Drover on this machine, without a manager to talk to. */
function addLocalCommands(program: Command): void {
  program
    .command('up')
    .description('Start Drover on this machine with embedded defaults and print its URL and token')
    .option('--data-dir <dir>', 'where Drover keeps its state', defaultDataDir())
    .addOption(new Option('--port <n>', 'API port (0 picks a free one)').default(8300).argParser((v) => Number(v)))
    .option('--detach', 'return once the API answers; stop later with "drover down"', false)
    .option('--json', 'print one JSON object with url, token and dataDir', false)
    .action(async (options: { dataDir: string; port: number; detach: boolean; json: boolean }) => {
      try {
        const info = await up(options);
        if (options.json) process.stdout.write(`${JSON.stringify(info)}\n`);
        else {
          process.stdout.write(
            [
              `Drover is up.`,
              `  URL:        ${info.url}`,
              `  Token:      ${info.token}`,
              `  Data dir:   ${info.dataDir}`,
              `  Appliances: ${info.appliances.join(', ')}`,
              `Try: DROVER_URL=${info.url} DROVER_TOKEN=${info.token} drover vm create web-1 --image web --start`,
              options.detach ? `Stop it with: drover down --data-dir ${info.dataDir}` : 'Press Ctrl-C to stop.',
              '',
            ].join('\n'),
          );
        }
        if (!options.detach) {
          // Nothing else keeps this process alive: the manager and the agent run in their own sessions.
          const keepAlive = setInterval(() => undefined, 1 << 30);
          await new Promise<void>((resolve) => {
            const stop = () => {
              process.stderr.write('Stopping Drover...\n');
              void down(info.dataDir).finally(() => {
                clearInterval(keepAlive);
                resolve();
              });
            };
            process.once('SIGINT', stop);
            process.once('SIGTERM', stop);
          });
        }
      } catch (error) {
        fail(error, options.json);
      }
    });

  registerAdminCommands(program);

  program
    .command('down')
    .description('Stop the VMs and services that "drover up" started')
    .option('--data-dir <dir>', 'the data directory given to "drover up"', defaultDataDir())
    .option('--json', 'print the result as JSON', false)
    .action(async (options: { dataDir: string; json: boolean }) => {
      try {
        const result = await down(options.dataDir);
        process.stdout.write(options.json ? `${JSON.stringify(result)}\n` : `Drover is down (${result.stopped.length} VM(s) stopped).\n`);
      } catch (error) {
        fail(error, options.json);
      }
    });
}

const cli = createCli(processContext(), addLocalCommands);
process.exitCode = await cli.run(process.argv.slice(2));
