import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { qemuDhParamsPem } from './qemu-dh-params.js';

/**
 * The DH group handed to QEMU's TLS servers (docs/migration.md, "Credentials") is RFC 7919's
 * ffdhe2048 as openssl knows it, and QEMU loads a server `tls-creds-x509` with it.
 */
describe('qemuDhParamsPem', () => {
  let dir: string;

  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'drover-dh-'));
    const openssl = (...args: string[]) => execFileSync('openssl', args, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] });
    openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'ca-key.pem', '-out', 'ca-cert.pem', '-subj', '/CN=test-ca', '-days', '2', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign');
    openssl('req', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'server-key.pem', '-out', 'server.csr', '-subj', '/CN=test-server');
    writeFileSync(join(dir, 'ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\n');
    openssl('x509', '-req', '-in', 'server.csr', '-CA', 'ca-cert.pem', '-CAkey', 'ca-key.pem', '-CAcreateserial', '-out', 'server-cert.pem', '-days', '2', '-extfile', 'ext');
    rmSync(join(dir, 'ca-key.pem'));
  });

  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  /** Starts QEMU with a server tls-creds-x509 on `dir` and quits it over QMP: its exit status and output. */
  function qemuLoadsServerCreds(): { status: number | null; output: string } {
    const result = spawnSync(
      'qemu-system-x86_64',
      ['-machine', 'none', '-nodefaults', '-display', 'none', '-S', '-object', `tls-creds-x509,id=tls0,dir=${dir},endpoint=server,verify-peer=on`, '-qmp', 'stdio'],
      { input: '{"execute":"qmp_capabilities"}\n{"execute":"quit"}\n', encoding: 'utf8', timeout: 30_000 },
    );
    return { status: result.status, output: `${result.stdout}${result.stderr}` };
  }

  it('is the ffdhe2048 group of RFC 7919', () => {
    const fromOpenssl = execFileSync('openssl', ['genpkey', '-genparam', '-algorithm', 'DH', '-pkeyopt', 'group:ffdhe2048'], { encoding: 'utf8' });
    expect(qemuDhParamsPem).toBe(fromOpenssl);
  });

  it('is loaded by QEMU as the dh-params.pem of a TLS server, and a damaged file is refused', () => {
    writeFileSync(join(dir, 'dh-params.pem'), qemuDhParamsPem);
    const good = qemuLoadsServerCreds();
    expect(good.status, good.output).toBe(0);
    expect(good.output).toContain('"return"');

    // The PEM cut short (its last base64 line gone): QEMU cannot load it, so it reads the file.
    writeFileSync(join(dir, 'dh-params.pem'), qemuDhParamsPem.replace(/\n[^\n]*\n-----END/, '\n-----END'));
    const damaged = qemuLoadsServerCreds();
    expect(damaged.status, damaged.output).not.toBe(0);
  });
});
