import { Command, CommanderError, InvalidArgumentError, Option } from 'commander';
import { DroverError, exitCodeOf, parseSize } from '@drover/core';
import { DroverClient } from './client.js';
import { loadConfig } from './config.js';
import { clean, formatJson, type Output } from './output.js';
import type { Operation } from './types.js';
import { createProgress, operationError, progressMode, waitForOperation, WaitInterrupted } from './wait.js';

/**
 * The frame every API command runs in: global options, one way to print (text
 * or exactly one JSON document), one way to fail (one line on stderr and an exit
 * code by error class), and operation waiting. Commands get a `Session`; the
 * process (or a test) gets an exit code back from `Cli.run`.
 */

export interface CliContext {
  env: NodeJS.ProcessEnv;
  stdout: Output;
  stderr: Output;
  stdin?: AsyncIterable<Buffer | string> | undefined;
  /** Puts a terminal stdin into raw mode and back (absent when stdin is not a terminal). */
  setRawMode?: ((on: boolean) => void) | undefined;
  fetch?: typeof fetch | undefined;
  /** Operation polling interval; default 200 ms. */
  pollIntervalMs?: number | undefined;
  /** Serial log polling interval; default 500 ms. */
  consoleIntervalMs?: number | undefined;
  retryDelayMs?: number | undefined;
  /** Stops waiting and following (tests). */
  signal?: AbortSignal | undefined;
  /** Turns Ctrl-C into an abort for the duration of one command (the real process). */
  watchInterrupts?: (() => { signal: AbortSignal; dispose(): void }) | undefined;
}

/** Exit code when the user interrupts (128 + SIGINT), as shells expect. */
export const EXIT_INTERRUPTED = 130;
/** Usage errors: a bad flag or argument is an `invalid` request. */
export const EXIT_USAGE = exitCodeOf('invalid');

export interface GlobalOptions {
  url?: string;
  token?: string;
  requestTimeout?: number;
  json?: boolean;
}

export class Session {
  private clientInstance: DroverClient | undefined;

  constructor(
    readonly ctx: CliContext,
    readonly options: GlobalOptions,
    readonly signal: AbortSignal | undefined,
  ) {}

  get json(): boolean {
    return this.options.json === true;
  }

  out(text: string | Uint8Array): void {
    this.ctx.stdout.write(text);
  }

  note(text: string): void {
    this.ctx.stderr.write(text);
  }

  /** One JSON document with --json, else the human form. */
  print(value: unknown, human: () => string): void {
    this.out(this.json ? formatJson(value) : human());
  }

  async client(): Promise<DroverClient> {
    if (!this.clientInstance) {
      const config = await loadConfig({ url: this.options.url, token: this.options.token }, this.ctx.env);
      this.clientInstance = new DroverClient({
        url: config.url,
        token: config.token,
        timeoutMs: this.options.requestTimeout === undefined ? undefined : this.options.requestTimeout * 1000,
        retryDelayMs: this.ctx.retryDelayMs,
        signal: this.signal,
        fetch: this.ctx.fetch,
      });
    }
    return this.clientInstance;
  }

  /**
   * Waits for an operation to end (unless `wait` is false), showing progress on
   * stderr, and turns a failed operation into its error.
   */
  async awaitOperation(operation: Operation, how: { wait: boolean; label: string }): Promise<Operation> {
    if (!how.wait) return operation;
    const client = await this.client();
    const progress = createProgress(this.ctx.stderr, progressMode(this.ctx.stderr, this.json), how.label);
    let final: Operation;
    try {
      final = await waitForOperation(client, operation, {
        intervalMs: this.ctx.pollIntervalMs,
        signal: this.signal,
        onUpdate: (current) => progress.update(current),
      });
    } finally {
      progress.finish();
    }
    const failure = operationError(final);
    if (failure) throw failure;
    return final;
  }

  /**
   * What every action answering an operation does: with --no-wait print the
   * operation as it is; else wait and print the outcome (the final operation with --json).
   */
  async followOperation(operation: Operation, how: { wait: boolean; label: string; done: (operation: Operation) => string }): Promise<Operation> {
    const final = await this.awaitOperation(operation, how);
    if (!how.wait) {
      this.print(final, () => `Operation ${final.id} (${final.kind}) is ${final.state}; follow it with: drover op watch ${final.id}\n`);
    } else {
      this.print(final, () => `${how.done(final)}\n`);
    }
    return final;
  }
}

export type Handler<O> = (session: Session, args: string[], options: O) => Promise<void>;

export class Cli {
  readonly program: Command;
  private exitCode = 0;

  constructor(
    readonly ctx: CliContext,
    extend?: (program: Command) => void,
  ) {
    this.program = new Command()
      .name('drover')
      .description('Drover: virtual machines on a cluster of hypervisor hosts, on real QEMU')
      .version('0.1.0', '-V, --version', 'print the CLI version')
      .option('--url <url>', 'manager URL (default: $DROVER_URL, then the config file)')
      .option('--token <token>', 'API token (default: $DROVER_TOKEN, then the config file)')
      .option('--request-timeout <seconds>', 'give up on a request the manager does not answer in time (default: 30)', positiveInt('--request-timeout', 1, 3600))
      .option('--json', 'print exactly one JSON document on stdout (errors as JSON on stderr)')
      // Program options go before the subcommand, so `drover up --json` keeps meaning
      // up's own --json; every API command repeats them (see `apiCommand`) so they may
      // also come after it.
      .enablePositionalOptions()
      .configureHelp({ showGlobalOptions: true, sortSubcommands: false })
      .configureOutput({
        writeOut: (text) => ctx.stdout.write(text),
        writeErr: (text) => ctx.stderr.write(text),
        getOutHelpWidth: () => ctx.stdout.columns ?? 80,
        getErrHelpWidth: () => ctx.stderr.columns ?? 80,
        // Usage errors are printed by `run`, in the same one-line form as every other error.
        outputError: () => undefined,
      })
      .exitOverride();
    this.program.addHelpText(
      'after',
      `
Environment:
  DROVER_URL, DROVER_TOKEN   manager URL and API token (flags override them)
  XDG_CONFIG_HOME            the config file is $XDG_CONFIG_HOME/drover/config.yaml
                             (default ~/.config/drover/config.yaml)

Examples:
  $ drover config set url https://manager.example:8300
  $ drover vm create web1 --image web --memory 512M --start
  $ drover vm list --state running
  $ drover --json vm show web1
`,
    );
    extend?.(this.program);
  }

  /** Wraps a command handler: session, interruption, error reporting. */
  action<O extends object>(handler: Handler<O>): (...raw: unknown[]) => Promise<void> {
    return async (...raw: unknown[]) => {
      const command = raw[raw.length - 1] as Command;
      const options = raw[raw.length - 2] as O;
      const args = raw.slice(0, -2).flatMap((value) => (Array.isArray(value) ? (value as string[]) : value === undefined ? [] : [String(value)]));
      const globals = mergedOptions(command);
      const interrupts = this.ctx.watchInterrupts?.();
      const signal = interrupts && this.ctx.signal ? AbortSignal.any([interrupts.signal, this.ctx.signal]) : (interrupts?.signal ?? this.ctx.signal);
      const session = new Session(this.ctx, globals, signal);
      try {
        await handler(session, args, options);
      } catch (error) {
        this.exitCode = this.report(error, session.json, signal);
      } finally {
        interrupts?.dispose();
      }
    };
  }

  async run(argv: readonly string[]): Promise<number> {
    this.exitCode = 0;
    try {
      await this.program.parseAsync([...argv], { from: 'user' });
    } catch (error) {
      if (error instanceof CommanderError) return this.usageError(error, argv);
      return this.report(error, argv.includes('--json'), undefined);
    }
    return this.exitCode;
  }

  private usageError(error: CommanderError, argv: readonly string[]): number {
    if (error.code === 'commander.helpDisplayed' || error.code === 'commander.version' || error.code === 'commander.executeSubCommandAsync') {
      return error.exitCode;
    }
    // A group without its subcommand: commander has already shown the group's help.
    if (error.code === 'commander.help') return EXIT_USAGE;
    const message = error.message.replace(/^error: /, '');
    const path = commandPath(this.program, argv);
    const hint = ` (see "${['drover', ...path].join(' ')} --help")`;
    this.report(new DroverError('invalid', `${message}${hint}`), argv.includes('--json'), undefined);
    return EXIT_USAGE;
  }

  /** Prints an error the one agreed way and answers the exit code. */
  report(error: unknown, json: boolean, signal: AbortSignal | undefined): number {
    const stderr = this.ctx.stderr;
    if (error instanceof WaitInterrupted) {
      const { id } = error.operation;
      const body = { code: 'interrupted', message: error.message, details: { operationId: id } };
      stderr.write(json ? `${JSON.stringify({ error: body })}\n` : `drover: ${error.message}; follow it with: drover op watch ${id}\n`);
      return EXIT_INTERRUPTED;
    }
    if (signal?.aborted) {
      stderr.write(json ? `${JSON.stringify({ error: { code: 'interrupted', message: 'Interrupted', details: {} } })}\n` : 'drover: interrupted\n');
      return EXIT_INTERRUPTED;
    }
    if (error instanceof DroverError) {
      stderr.write(json ? `${JSON.stringify({ error: error.toJSON() })}\n` : `drover: ${clean(error.message)}\n`);
      return exitCodeOf(error.code);
    }
    const text = error instanceof Error ? (error.stack ?? error.message) : String(error);
    stderr.write(
      json
        ? `${JSON.stringify({ error: { code: 'internal', message: error instanceof Error ? error.message : String(error), details: {} } })}\n`
        : `drover: unexpected error: ${text}\n`,
    );
    return 1;
  }
}

/** Options from the root down to the command, the nearer one winning. */
function mergedOptions(command: Command): GlobalOptions {
  const chain: Command[] = [];
  for (let current: Command | null = command; current; current = current.parent) chain.unshift(current);
  const merged: Record<string, unknown> = {};
  for (const item of chain) {
    for (const [key, value] of Object.entries(item.opts())) if (value !== undefined) merged[key] = value;
  }
  return merged as GlobalOptions;
}

/**
 * A command that talks to the manager: it takes --json, and the global options
 * again (hidden, they show under "Global Options") so they work after it too.
 */
export function apiCommand(parent: Command, nameAndArgs: string, description: string, options: { hidden?: boolean } = {}): Command {
  return parent
    .command(nameAndArgs, { hidden: options.hidden ?? false })
    .description(description)
    .option('--json', 'print exactly one JSON document on stdout (errors as JSON on stderr)')
    .addOption(new Option('--url <url>').hideHelp())
    .addOption(new Option('--token <token>').hideHelp())
    .addOption(new Option('--request-timeout <seconds>').hideHelp().argParser(positiveInt('--request-timeout', 1, 3600)));
}

/** The subcommand names at the start of argv (for the "see --help" hint). */
function commandPath(program: Command, argv: readonly string[]): string[] {
  const path: string[] = [];
  let command = program;
  for (const word of argv) {
    if (word.startsWith('-')) continue;
    const next = command.commands.find((sub) => sub.name() === word || sub.aliases().includes(word));
    if (!next) break;
    path.push(next.name());
    command = next;
  }
  return path;
}

// ---------------------------------------------------------------------------
// Option parsers shared by the commands. They throw InvalidArgumentError so
// commander names the option in the message.

export function positiveInt(flag: string, min = 1, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value: string) => {
    if (!/^\d+$/.test(value.trim())) throw new InvalidArgumentError(`${flag} expects a whole number`);
    const number = Number(value);
    if (number < min || number > max) throw new InvalidArgumentError(`${flag} must be between ${min} and ${max}`);
    return number;
  };
}

/** `512M`, `1G`, `1.5GiB`; a bare number is MiB, as in every VM tool. */
export function parseMemoryMiB(value: string): number {
  const text = value.trim();
  let bytes: number;
  try {
    bytes = /^\d+$/.test(text) ? Number(text) * 1024 * 1024 : parseSize(text);
  } catch (error) {
    throw new InvalidArgumentError((error as Error).message);
  }
  if (bytes % (1024 * 1024) !== 0 || bytes === 0) throw new InvalidArgumentError(`Memory "${value}" must be a positive whole number of MiB (e.g. 256M, 1G)`);
  return bytes / (1024 * 1024);
}

/** Repeatable `--label key=value`. */
export function collectLabel(value: string, previous: Record<string, string> | undefined): Record<string, string> {
  const at = value.indexOf('=');
  if (at <= 0) throw new InvalidArgumentError(`Label "${value}" must look like key=value`);
  return { ...(previous ?? {}), [value.slice(0, at)]: value.slice(at + 1) };
}

/** Repeatable option that also takes comma-separated lists. */
export function collectList(value: string, previous: string[] | undefined): string[] {
  const items = value
    .split(',')
    .map((item) => item.trim())
    .filter(Boolean);
  return [...(previous ?? []), ...items];
}

export function collectForward(value: string, previous: Array<{ hostPort: number; guestPort: number }> | undefined) {
  const match = /^(\d{1,5}):(\d{1,5})$/.exec(value.trim());
  const hostPort = Number(match?.[1]);
  const guestPort = Number(match?.[2]);
  if (!match || hostPort < 1 || hostPort > 65535 || guestPort < 1 || guestPort > 65535) {
    throw new InvalidArgumentError(`Forward "${value}" must look like HOSTPORT:GUESTPORT, e.g. 8080:80`);
  }
  return [...(previous ?? []), { hostPort, guestPort }];
}

export function labelQuery(value: string): string {
  if (value.indexOf('=') <= 0) throw new InvalidArgumentError(`Label "${value}" must look like key=value`);
  return value;
}
