import { errors, exitCodeOf, isDroverError } from '@drover/core';
import { buildAppliance, buildProbeImage, defaultApplianceCacheDir, type ApplianceArtifacts, type ProbeImage } from './build.js';
import { APPLIANCE_NAMES, isApplianceName, type ApplianceName } from './catalog.js';

export const USAGE = `Usage: drover-appliances build [--cache-dir DIR] [--json] [NAME...]

Builds Drover's demo appliances from this host's Debian cloud kernel and
busybox-static, or finds them in the cache, and prints the artifact paths.

Names: ${APPLIANCE_NAMES.join(', ')}, probe (default: all of them).

Options:
  --cache-dir DIR  cache directory (default: $DROVER_APPLIANCE_CACHE or
                   /var/cache/drover/appliances; now ${defaultApplianceCacheDir()})
  --json           print one JSON object instead of text
  -h, --help       show this help
`;

export interface CliIo {
  out: (text: string) => void;
  err: (text: string) => void;
}

interface BuildCommand {
  cacheDir: string;
  json: boolean;
  names: Array<ApplianceName | 'probe'>;
}

function parse(argv: readonly string[]): BuildCommand | 'help' {
  if (argv.length === 0 || argv.includes('--help') || argv.includes('-h') || argv[0] === 'help') return 'help';
  const [command, ...rest] = argv;
  if (command !== 'build') throw errors.invalid(`Unknown command "${command}": the only command is "build" (see --help)`);
  const parsed: BuildCommand = { cacheDir: defaultApplianceCacheDir(), json: false, names: [] };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    if (arg === '--json') parsed.json = true;
    else if (arg === '--cache-dir' || arg.startsWith('--cache-dir=')) {
      const value = arg.includes('=') ? arg.slice(arg.indexOf('=') + 1) : rest[++i];
      if (value === undefined || value.length === 0) throw errors.invalid('--cache-dir needs a directory');
      parsed.cacheDir = value;
    } else if (arg.startsWith('-')) {
      throw errors.invalid(`Unknown option "${arg}" (see --help)`);
    } else if (arg === 'probe' || isApplianceName(arg)) {
      if (!parsed.names.includes(arg)) parsed.names.push(arg);
    } else {
      throw errors.invalid(`Unknown appliance "${arg}": expected ${APPLIANCE_NAMES.join(', ')} or probe`);
    }
  }
  if (!parsed.cacheDir.startsWith('/')) parsed.cacheDir = `${process.cwd()}/${parsed.cacheDir}`;
  if (parsed.names.length === 0) parsed.names = [...APPLIANCE_NAMES, 'probe'];
  return parsed;
}

function describeAppliance(a: ApplianceArtifacts): string {
  const rows: Array<[string, string]> = [
    ['hash', a.hash],
    ['kernel', a.kernel],
    ['initrd', a.initrd],
    ['rootDisk', a.rootDisk],
    ...(a.dataDisk ? ([['dataDisk', a.dataDisk]] as Array<[string, string]>) : []),
    ['cmdline', a.cmdline],
    ['minMemoryMiB', String(a.minMemoryMiB)],
    ['ports', Object.entries(a.ports).map(([k, v]) => `${k}=${v}`).join(' ') || '-'],
  ];
  return `${a.name} ${a.version}\n${rows.map(([k, v]) => `  ${k.padEnd(13)}${v}`).join('\n')}\n`;
}

function describeProbe(p: ProbeImage): string {
  return `probe\n  kernel       ${p.kernel}\n  initrd       ${p.initrd}\n  cmdline      ${p.cmdline}\n  expect       ${p.expect}\n`;
}

/** Runs the CLI; returns the process exit code. */
export async function runCli(argv: readonly string[], io: CliIo): Promise<number> {
  try {
    const command = parse(argv);
    if (command === 'help') {
      io.out(USAGE);
      return 0;
    }
    const appliances: Partial<Record<ApplianceName, ApplianceArtifacts>> = {};
    let probe: ProbeImage | undefined;
    for (const name of command.names) {
      if (name === 'probe') probe = await buildProbeImage({ cacheDir: command.cacheDir });
      else appliances[name] = await buildAppliance(name, { cacheDir: command.cacheDir });
    }
    if (command.json) {
      io.out(`${JSON.stringify({ cacheDir: command.cacheDir, appliances, ...(probe ? { probe } : {}) }, null, 2)}\n`);
    } else {
      const parts = Object.values(appliances).map(describeAppliance);
      if (probe) parts.push(describeProbe(probe));
      io.out(parts.join('\n'));
    }
    return 0;
  } catch (error) {
    if (isDroverError(error)) {
      io.err(`drover-appliances: ${error.message}\n`);
      return exitCodeOf(error.code);
    }
    io.err(`drover-appliances: unexpected failure: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`);
    return 1;
  }
}
