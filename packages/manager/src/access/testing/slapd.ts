import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { connect } from 'node:net';
import { freePort, tempDir } from '@drover/agent/testing';

/** A real slapd for tests: its own directory, configuration, certificate and ports on 127.0.0.1. */
export interface TestSlapd {
  url: string;
  ldapsUrl: string;
  caPem: string;
  caFile: string;
  suffix: string;
  rootDn: string;
  rootPassword: string;
  stop(): Promise<void>;
}

export interface SlapdUser {
  uid: string;
  password: string;
}

async function waitForPort(port: number, child: ChildProcess, timeoutMs = 15_000): Promise<void> {
  for (const deadline = Date.now() + timeoutMs; ; ) {
    if (child.exitCode !== null) throw new Error(`slapd exited with ${child.exitCode}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1');
      socket.once('connect', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (open) return;
    if (Date.now() > deadline) throw new Error(`slapd did not listen on ${port}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Starts slapd (mdb backend) with a generated slapd.conf, a CA and a server
 * certificate for 127.0.0.1 (LDAPS and StartTLS), people under
 * ou=people and groupOfNames under ou=groups. `stop` kills it by PID and
 * removes its directory.
 */
export async function startSlapd(users: SlapdUser[], groups: Record<string, string[]>): Promise<TestSlapd> {
  const dir = tempDir('slapd');
  const suffix = 'dc=drover,dc=test';
  const rootDn = `cn=admin,${suffix}`;
  const rootPassword = 'root-secret';
  let child: ChildProcess | undefined;
  try {
    const db = path.join(dir, 'db');
    mkdirSync(db);
    const file = (name: string) => path.join(dir, name);
    const run = (cmd: string, args: string[]) => execFileSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    run('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-days', '2', '-subj', '/CN=drover test LDAP CA', '-keyout', file('ca.key'), '-out', file('ca.pem')]);
    run('openssl', ['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', file('server.key'), '-out', file('server.csr')]);
    writeFileSync(file('san.ext'), 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
    run('openssl', ['x509', '-req', '-in', file('server.csr'), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', file('san.ext'), '-out', file('server.pem')]);
    const hashed = execFileSync('/usr/sbin/slappasswd', ['-s', rootPassword]).toString().trim();
    writeFileSync(
      file('slapd.conf'),
      [
        'include /etc/ldap/schema/core.schema',
        'include /etc/ldap/schema/cosine.schema',
        'include /etc/ldap/schema/inetorgperson.schema',
        `pidfile ${file('slapd.pid')}`,
        'modulepath /usr/lib/ldap',
        'moduleload back_mdb',
        `TLSCACertificateFile ${file('ca.pem')}`,
        `TLSCertificateFile ${file('server.pem')}`,
        `TLSCertificateKeyFile ${file('server.key')}`,
        'database mdb',
        'maxsize 16777216',
        `suffix "${suffix}"`,
        `rootdn "${rootDn}"`,
        `rootpw ${hashed}`,
        `directory ${db}`,
        'access to attrs=userPassword by self =xw by anonymous auth by * none',
        'access to * by * read',
        '',
      ].join('\n'),
    );
    const entries = [
      `dn: ${suffix}\nobjectClass: dcObject\nobjectClass: organization\ndc: drover\no: Drover test`,
      `dn: ou=people,${suffix}\nobjectClass: organizationalUnit\nou: people`,
      `dn: ou=groups,${suffix}\nobjectClass: organizationalUnit\nou: groups`,
      `dn: uid=svc,ou=people,${suffix}\nobjectClass: inetOrgPerson\nuid: svc\ncn: svc\nsn: svc\nuserPassword: svc-secret`,
      ...users.map((u) => `dn: uid=${u.uid},ou=people,${suffix}\nobjectClass: inetOrgPerson\nuid: ${u.uid}\ncn: ${u.uid}\nsn: ${u.uid}\nuserPassword: ${u.password}`),
      // groupOfNames needs a member: the service account is in every group.
      ...Object.entries(groups).map(([cn, members]) => `dn: cn=${cn},ou=groups,${suffix}\nobjectClass: groupOfNames\ncn: ${cn}\nmember: uid=svc,ou=people,${suffix}\n${members.map((m) => `member: uid=${m},ou=people,${suffix}`).join('\n')}`),
    ];
    writeFileSync(file('data.ldif'), `${entries.join('\n\n')}\n`);
    run('/usr/sbin/slapadd', ['-f', file('slapd.conf'), '-l', file('data.ldif')]);
    const port = await freePort();
    const tlsPort = await freePort();
    child = spawn('/usr/sbin/slapd', ['-f', file('slapd.conf'), '-h', `ldap://127.0.0.1:${port}/ ldaps://127.0.0.1:${tlsPort}/`, '-d', '0'], { stdio: 'ignore' });
    await waitForPort(port, child);
    await waitForPort(tlsPort, child);
    const running = child;
    return {
      url: `ldap://127.0.0.1:${port}`,
      ldapsUrl: `ldaps://127.0.0.1:${tlsPort}`,
      caPem: readFileSync(file('ca.pem'), 'utf8'),
      caFile: file('ca.pem'),
      suffix,
      rootDn,
      rootPassword,
      async stop() {
        if (running.exitCode === null) {
          const exited = new Promise((resolve) => running.once('exit', resolve));
          running.kill('SIGTERM');
          const timer = setTimeout(() => running.kill('SIGKILL'), 5000);
          await exited;
          clearTimeout(timer);
        }
        rmSync(dir, { recursive: true, force: true });
      },
    };
  } catch (error) {
    child?.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
}
