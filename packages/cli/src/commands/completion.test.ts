import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { runCli } from '../fake-manager.js';
import { createCli } from '../program.js';
import { bashCompletion, completionTree, zshCompletion } from './completion.js';

const silent = { write: () => true };
const cli = () => createCli({ env: {}, stdout: silent, stderr: silent });

/** Runs the bash completion function as bash would for the words typed so far. */
function complete(script: string, line: string): string[] {
  const words = line.split(' ');
  const program = `${script}
COMP_WORDS=(${words.map((w) => `'${w}'`).join(' ')})
COMP_CWORD=${words.length - 1}
_drover
printf '%s\\n' "\${COMPREPLY[@]}"`;
  return execFileSync('bash', ['--norc', '--noprofile', '-c', program], { encoding: 'utf8' }).split('\n').filter(Boolean);
}

describe('completion', () => {
  it('is generated from the command tree, aliases and nested groups included', () => {
    const nodes = completionTree(cli().program);
    const byPath = new Map(nodes.map((node) => [node.path.join(' '), node]));
    expect(byPath.get('')!.subcommands.map((s) => s.name)).toEqual(expect.arrayContaining(['vm', 'host', 'image', 'op', 'operation', 'config', 'completion']));
    expect(byPath.get('vm create')!.options).toEqual(expect.arrayContaining(['--image', '--memory', '--label', '--forward', '--json', '--help']));
    expect(byPath.get('vm create')!.valueOptions).toContain('--image');
    expect(byPath.get('vm create')!.valueOptions).not.toContain('--autostart');
    expect(byPath.get('vm snap revert')!.args.map((a) => a.name)).toEqual(['vm', 'snapshot']);
    expect(byPath.get('config set')!.args[0]!.choices).toEqual(['url', 'token']);
    // Hidden helpers and hidden global copies stay out.
    expect(byPath.has('__names')).toBe(false);
    expect(byPath.get('vm list')!.options).not.toContain('--url');
  });

  it('includes commands added later without further work', () => {
    const fresh = cli();
    fresh.program.command('gadget').description('Gadgets').command('deploy <thing>').option('--isolated');
    const script = bashCompletion(fresh.program);
    expect(script).toContain("'gadget deploy')");
    expect(complete(script, 'drover gadget deploy --is')).toEqual(['--isolated']);
  });

  it('completes subcommands, options and fixed choices in bash', () => {
    const script = bashCompletion(cli().program);
    expect(complete(script, 'drover v')).toEqual(['vm', 'volume']);
    expect(complete(script, 'drover vm s')).toEqual(['show', 'start', 'save', 'stop', 'snapshot', 'snap']);
    expect(complete(script, 'drover vm snapshot ')).toEqual(['create', 'list', 'ls', 'revert', 'delete', 'rm']);
    expect(complete(script, 'drover vm create web1 --image web --me')).toEqual(['--memory']);
    expect(complete(script, 'drover config set ')).toEqual(['url', 'token']);
    expect(complete(script, 'drover completion z')).toEqual(['zsh']);
  });

  it('prints both scripts through the command', async () => {
    const bash = await runCli(['completion', 'bash']);
    expect(bash.code).toBe(0);
    expect(bash.stdout).toContain('complete -o default -F _drover drover');
    expect(bash.stdout).toContain("'vm snapshot create')");
    execFileSync('bash', ['-n'], { input: bash.stdout });
    const zsh = await runCli(['completion', 'zsh']);
    expect(zsh.stdout.startsWith('#compdef drover\n')).toBe(true);
    expect(zsh.stdout).toContain("'create:Create a VM from an image, an ISO, or both'");
    expect(zshCompletion(cli().program)).toBe(zsh.stdout);
    expect((await runCli(['completion', 'fish'])).code).toBe(2);
  });
});
