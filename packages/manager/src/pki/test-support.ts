import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

/** Test-only: a key and CSR made with the openssl CLI, as an agent would. */
export function makeCsr(subject: string, keyType: 'ec' | 'rsa' = 'ec'): { csrPem: string; keyPem: string } {
  const dir = mkdtempSync(join(tmpdir(), 'drover-csr-'));
  try {
    const keyPath = join(dir, 'key.pem');
    const keyArgs = keyType === 'ec' ? ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'] : ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048'];
    execFileSync('openssl', ['genpkey', ...keyArgs, '-out', keyPath], { stdio: 'pipe' });
    const csrPem = execFileSync('openssl', ['req', '-new', '-config', '/dev/null', '-key', keyPath, '-subj', subject], { encoding: 'utf8' });
    return { csrPem, keyPem: readFileSync(keyPath, 'utf8') };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Test-only: runs `openssl <args>` with `input` on stdin; stdout and stderr together. */
export function opensslText(args: string[], input = ''): string {
  const run = spawnSync('openssl', args, { input, encoding: 'utf8' });
  return `${run.stdout}${run.stderr}`;
}
