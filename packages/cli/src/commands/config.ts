import { Argument } from 'commander';
import { errors } from '@drover/core';
import type { Cli, Session } from '../cli.js';
import { configFilePath, configKeys, maskToken, readConfigFile, writeConfigValue, type ConfigKey } from '../config.js';
import { formatFields } from '../output.js';

async function readStdin(session: Session): Promise<string> {
  const stdin = session.ctx.stdin;
  if (!stdin) throw errors.invalid('No standard input to read the value from');
  let text = '';
  for await (const chunk of stdin) text += typeof chunk === 'string' ? chunk : chunk.toString('utf8');
  return text.trim();
}

export function registerConfigCommands(cli: Cli): void {
  const config = cli.program
    .command('config')
    .description('The CLI config file: manager URL and token')
    .addHelpText(
      'after',
      `
The file is $XDG_CONFIG_HOME/drover/config.yaml (default ~/.config/drover/config.yaml),
written with mode 0600. --url/--token and DROVER_URL/DROVER_TOKEN take precedence.

Examples:
  $ drover config set url https://manager.example:8300
  $ drover config set token -  < token.txt
  $ drover config show`,
    );

  config
    .command('set')
    .description('Set a value in the config file ("-" reads it from standard input)')
    .addArgument(new Argument('<key>', 'what to set').choices(configKeys))
    .argument('<value>', 'the value; "-" reads it from standard input (keeps a token out of shell history)')
    .action(
      cli.action(async (session, [key, value]) => {
        const file = configFilePath(session.ctx.env);
        const text = value === '-' ? await readStdin(session) : value!;
        if (!text) throw errors.invalid(`Empty value for "${key}"`);
        await writeConfigValue(file, key as ConfigKey, text);
        session.out(`Set ${key} in ${file}\n`);
      }),
    );

  config
    .command('unset')
    .description('Remove a value from the config file')
    .addArgument(new Argument('<key>', 'what to remove').choices(configKeys))
    .action(
      cli.action(async (session, [key]) => {
        const file = configFilePath(session.ctx.env);
        await writeConfigValue(file, key as ConfigKey, undefined);
        session.out(`Removed ${key} from ${file}\n`);
      }),
    );

  config
    .command('show')
    .description('Show the URL and token in effect and where each comes from (the token masked)')
    .option('--json', 'print exactly one JSON document on stdout')
    .action(
      cli.action(async (session) => {
        const file = configFilePath(session.ctx.env);
        const fromFile = await readConfigFile(file);
        const pick = (flag: string | undefined, env: string | undefined, stored: string | undefined) =>
          flag ? { value: flag, source: 'flag' } : env ? { value: env, source: 'env' } : stored ? { value: stored, source: 'file' } : { value: undefined, source: 'unset' };
        const url = pick(session.options.url, session.ctx.env.DROVER_URL, fromFile.url);
        const token = pick(session.options.token, session.ctx.env.DROVER_TOKEN, fromFile.token);
        const shown = {
          file,
          url: url.value ?? null,
          urlSource: url.source,
          token: token.value ? maskToken(token.value) : null,
          tokenSource: token.source,
        };
        session.print(shown, () =>
          formatFields([
            ['Config file', file],
            ['URL', `${url.value ?? '(none)'} (${url.source})`],
            ['Token', `${maskToken(token.value)} (${token.source})`],
          ]),
        );
      }),
    );

  config
    .command('path')
    .description('Print the path of the config file')
    .action(
      cli.action(async (session) => {
        session.out(`${configFilePath(session.ctx.env)}\n`);
      }),
    );
}
