/**
 * Boots the db and web appliances side by side on raw QEMU (TCG) and checks
 * them from the host over loopback forwards: the db protocol, the web page
 * with a value read live from the db, and db persistence across a restart.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { buildAppliance, type ApplianceArtifacts } from './index.js';
import { cloneDisk, dbRequest, freePort, httpGet, killAllRawVms, RawVm } from './test-support/raw-qemu.js';
import { makeTestWorkspace, type TestWorkspace } from './test-support/workspace.js';

const READY_DB = /^DROVER-READY appliance=db version=1\.0\.0 name=db-1$/m;
const READY_WEB = /^DROVER-READY appliance=web version=1\.0\.0 name=web-1$/m;

describe('web and db appliances on QEMU', () => {
  let ws: TestWorkspace;
  let db: ApplianceArtifacts;
  let web: ApplianceArtifacts;
  let dbVm: RawVm;
  let dbPort: number;
  let webPort: number;
  let dbDisks: { root: string; data: string };
  const bootTimes: string[] = [];

  const startDb = (name: string) =>
    RawVm.start({
      name,
      workDir: ws.dir,
      kernel: db.kernel,
      initrd: db.initrd,
      cmdline: `${db.cmdline} drover.name=db-1 drover.net=user`,
      disks: [
        { path: dbDisks.root, format: 'qcow2' },
        { path: dbDisks.data, format: 'qcow2' },
      ],
      net: { hostForwards: [{ hostPort: dbPort, guestPort: db.ports.db! }] },
    });

  const waitReady = async (vm: RawVm, pattern: RegExp) => {
    await vm.waitForSerial(pattern);
    bootTimes.push(`${vm.options.name}: READY after ${((Date.now() - vm.startedAt) / 1000).toFixed(1)} s`);
  };

  beforeAll(async () => {
    ws = await makeTestWorkspace('web-db');
    [db, web] = await Promise.all([buildAppliance('db', { cacheDir: ws.cacheDir }), buildAppliance('web', { cacheDir: ws.cacheDir })]);
    dbDisks = {
      root: await cloneDisk(db.rootDisk, join(ws.dir, 'db-root.qcow2')),
      data: await cloneDisk(db.dataDisk!, join(ws.dir, 'db-data.qcow2')),
    };
    const webRoot = await cloneDisk(web.rootDisk, join(ws.dir, 'web-root.qcow2'));
    dbPort = await freePort();
    webPort = await freePort();
    // Both boot at once: the web page reads the db per request, not at boot.
    dbVm = startDb('db-boot1');
    const webVm = RawVm.start({
      name: 'web',
      workDir: ws.dir,
      kernel: web.kernel,
      initrd: web.initrd,
      // Static address this time (db uses drover.net=user, counter uses DHCP).
      cmdline: `${web.cmdline} drover.name=web-1 drover.ip=10.0.2.15/24 drover.gw=10.0.2.2 drover.db=10.0.2.2:${dbPort}`,
      disks: [{ path: webRoot, format: 'qcow2' }],
      net: { hostForwards: [{ hostPort: webPort, guestPort: web.ports.http! }] },
    });
    await Promise.all([waitReady(dbVm, READY_DB), waitReady(webVm, READY_WEB)]);
  });

  afterAll(async () => {
    await killAllRawVms();
    await ws?.cleanup();
    if (bootTimes.length > 0) console.log(`boot times (TCG): ${bootTimes.join('; ')}`);
  });

  it('db prints exactly one ready line and speaks its line protocol', async () => {
    expect(dbVm.serialLines().filter((l) => l.includes('DROVER-READY'))).toHaveLength(1);
    expect(
      await dbRequest(dbPort, [
        'VERSION',
        'PING',
        'GET missing-key',
        'SET greeting hello-from-db',
        'GET greeting',
        'SET spaced a value with  spaces',
        'GET spaced',
        'SET .. dots-are-just-a-key',
        'GET ..',
        'SET ../escape nope',
        'GET bad/key',
        'DEL spaced',
        'GET spaced',
        'DEL spaced',
        'FROB x',
      ]),
    ).toEqual([
      'db 1.0.0',
      'PONG',
      'NOTFOUND',
      'OK',
      'VALUE hello-from-db',
      'OK',
      'VALUE a value with  spaces',
      'OK',
      'VALUE dots-are-just-a-key',
      expect.stringMatching(/^ERR bad key/),
      expect.stringMatching(/^ERR bad key/),
      'OK',
      'NOTFOUND',
      'NOTFOUND',
      expect.stringMatching(/^ERR unknown command/),
    ]);
  });

  it('web serves its name, appliance, version and the greeting read from the db', async () => {
    expect(await dbRequest(dbPort, ['SET greeting hello-from-db'])).toEqual(['OK']);
    const page = await httpGet(webPort, '/');
    expect(page.status).toBe(200);
    expect(page.body).toContain('<h1 id="name">web-1</h1>');
    expect(page.body).toContain('<span id="appliance">web</span>');
    expect(page.body).toContain('<span id="version">1.0.0</span>');
    expect(page.body).toContain('<span id="db-value">hello-from-db</span>');
    const health = await httpGet(webPort, '/health');
    expect(health).toEqual({ status: 200, body: 'ok\n' });
  });

  it('web reads the value at request time and HTML-escapes it', async () => {
    expect(await dbRequest(dbPort, ['SET greeting <b>live & "well"</b>'])).toEqual(['OK']);
    const page = await httpGet(webPort, '/');
    expect(page.body).toContain('<span id="db-value">&lt;b&gt;live &amp; &quot;well&quot;&lt;/b&gt;</span>');
    expect(page.body).not.toContain('<b>live');
    expect(await dbRequest(dbPort, ['DEL greeting'])).toEqual(['OK']);
    expect((await httpGet(webPort, '/')).body).toContain('<span id="db-status">notfound</span>');
  });

  it('db values survive a graceful power-off and a new boot on the same disks', async () => {
    expect(await dbRequest(dbPort, ['SET greeting hello-from-db', 'SET persisted still-here'])).toEqual(['OK', 'OK']);
    await dbVm.qmp('system_powerdown');
    const exit = await dbVm.waitForExit(60_000);
    expect(exit.code).toBe(0);
    expect(dbVm.serial()).toMatch(/^DROVER-STOPPING appliance=db name=db-1$/m);

    const web = await httpGet(webPort, '/');
    expect(web.body).toContain('<span id="db-status">unreachable</span>');

    dbVm = startDb('db-boot2');
    await waitReady(dbVm, READY_DB);
    expect(await dbRequest(dbPort, ['GET persisted', 'GET greeting'])).toEqual([
      'VALUE still-here',
      'VALUE hello-from-db',
    ]);
    expect((await httpGet(webPort, '/')).body).toContain('<span id="db-value">hello-from-db</span>');
  }, 300_000);
});
