/**
 * Initramfs-level boots on raw QEMU (TCG), started together: the acceleration
 * probe prints its line and powers off; the appliance initramfs without a
 * root disk reports DROVER-PANIC instead of hanging silently.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildAppliance, buildProbeImage, type ProbeImage } from './index.js';
import { killAllRawVms, RawVm } from './test-support/raw-qemu.js';
import { makeTestWorkspace, type TestWorkspace } from './test-support/workspace.js';

describe('initramfs boots', () => {
  let ws: TestWorkspace;
  let probe: ProbeImage;
  let probeVm: RawVm;
  let diskless: RawVm;

  beforeAll(async () => {
    ws = await makeTestWorkspace('initramfs');
    const [p, web] = await Promise.all([
      buildProbeImage({ cacheDir: ws.cacheDir }),
      buildAppliance('web', { cacheDir: ws.cacheDir }),
    ]);
    probe = p;
    probeVm = RawVm.start({ name: 'probe', workDir: ws.dir, kernel: probe.kernel, initrd: probe.initrd, cmdline: probe.cmdline, net: false });
    diskless = RawVm.start({ name: 'diskless', workDir: ws.dir, kernel: web.kernel, initrd: web.initrd, cmdline: web.cmdline, net: false });
  });
  afterAll(async () => {
    await killAllRawVms();
    await ws?.cleanup();
  });

  it('the probe prints DROVER-PROBE-OK on the serial console and powers the guest off', async () => {
    const exit = await probeVm.waitForExit(120_000);
    console.log(`probe: powered off after ${((Date.now() - probeVm.startedAt) / 1000).toFixed(1)} s (TCG)`);
    expect(exit.code).toBe(0);
    expect(probeVm.serialLines()).toContain(probe.expect);
  });

  it('an appliance without its root disk prints DROVER-PANIC and keeps a shell', async () => {
    await diskless.waitForSerial(/^DROVER-PANIC .*$/m);
    expect(diskless.serialLines()).toContain('DROVER-PANIC root disk /dev/vda did not appear');
    await diskless.waitForSerial(/built-in shell/);
    expect(diskless.hasExited).toBe(false);
  });
});
