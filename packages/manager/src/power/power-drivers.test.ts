import { spawn, type ChildProcess } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '@drover/agent/testing';
import { applyPower, createPowerDriver } from './drivers.js';
import { magicPacket } from './wol-driver.js';

const dir = mkdtempSync(path.join(tmpdir(), 'drover-power-'));

afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

/**
 * A real BMC: Debian's ipmi_sim on loopback, with a chassis_control script
 * that keeps the power state in a file and logs every call.
 */
describe('IPMI driver against ipmi_sim', () => {
  let sim: ChildProcess | undefined;
  let port = 0;
  const simDir = path.join(dir, 'ipmi');
  const calls = path.join(simDir, 'calls.log');

  beforeAll(async () => {
    mkdirSync(path.join(simDir, 'state'), { recursive: true });
    port = await freePort();
    const control = path.join(simDir, 'chassis.sh');
    writeFileSync(
      control,
      `#!/bin/sh
echo "$@" >> "${calls}"
STATE="${simDir}/power"
case "$2" in
  get) shift 2; out=""; for k in "$@"; do [ "$k" = power ] && out="$out power:$(cat "$STATE" 2>/dev/null || echo 0)"; done; echo $out;;
  set) shift 2; while [ $# -gt 1 ]; do [ "$1" = power ] && echo "$2" > "$STATE"; shift 2; done;;
esac
`,
    );
    chmodSync(control, 0o755);
    writeFileSync(
      path.join(simDir, 'lan.conf'),
      `name "drover-test"
set_working_mc 0x20
  startlan 1
    addr 127.0.0.1 ${port}
    priv_limit admin
    allowed_auths_callback none md2 md5 straight
    allowed_auths_user none md2 md5 straight
    allowed_auths_operator none md2 md5 straight
    allowed_auths_admin none md2 md5 straight
    guid a123456789abcdefa123456789abcdef
  endlan
  chassis_control "${control} 0x20"
user 2 true "admin" "s3cret-pw" admin 10 none md2 md5 straight
`,
    );
    writeFileSync(path.join(simDir, 'bmc.emu'), 'mc_setbmc 0x20\nmc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02\nmc_enable 0x20\n');
    sim = spawn('ipmi_sim', ['-n', '-c', path.join(simDir, 'lan.conf'), '-f', path.join(simDir, 'bmc.emu'), '-s', path.join(simDir, 'state')], { stdio: 'ignore' });
    const driver = createPowerDriver({ driver: 'ipmi', address: '127.0.0.1', port, username: 'admin', password: 's3cret-pw' }, { id: 'x', name: 'bmc-host' });
    for (const deadline = Date.now() + 20_000; ; ) {
      try {
        await driver.status();
        break;
      } catch (error) {
        if (Date.now() > deadline) throw error;
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  });

  afterAll(() => {
    if (sim?.exitCode === null) sim.kill('SIGKILL');
  });

  it('switches the chassis on, reads it, cycles it (ending on) and switches it off', async () => {
    const driver = createPowerDriver({ driver: 'ipmi', address: '127.0.0.1', port, username: 'admin', password: 's3cret-pw' }, { id: 'x', name: 'bmc-host' });
    expect((await applyPower(driver, 'status', { hostName: 'bmc-host' })).state).toBe('off');
    expect((await applyPower(driver, 'on', { hostName: 'bmc-host', pollMs: 100 })).state).toBe('on');
    expect(readFileSync(path.join(simDir, 'power'), 'utf8').trim()).toBe('1');
    writeFileSync(calls, '');
    // ipmi_sim's cycle only powers down: the driver sees the chassis stay off and switches it on.
    expect((await applyPower(driver, 'cycle', { hostName: 'bmc-host', pollMs: 100, cycleGraceMs: 500 })).state).toBe('on');
    const cycleCalls = readFileSync(calls, 'utf8').split('\n').filter((l) => l.includes('set power'));
    expect(cycleCalls).toEqual(['0x20 set power 0', '0x20 set power 1']);
    expect((await applyPower(driver, 'off', { hostName: 'bmc-host', pollMs: 100 })).state).toBe('off');
    expect(readFileSync(path.join(simDir, 'power'), 'utf8').trim()).toBe('0');
  });

  it('refuses a wrong password with a clear error and changes nothing', async () => {
    const before = readFileSync(path.join(simDir, 'power'), 'utf8');
    const driver = createPowerDriver({ driver: 'ipmi', address: '127.0.0.1', port, username: 'admin', password: 'wrong', timeoutMs: 20_000 }, { id: 'x', name: 'bmc-host' });
    await expect(applyPower(driver, 'on', { hostName: 'bmc-host' })).rejects.toMatchObject({ code: 'unavailable', message: expect.stringContaining('chassis power on') });
    expect(readFileSync(path.join(simDir, 'power'), 'utf8')).toBe(before);
  });

  it('times out against a BMC that never answers', async () => {
    const silent = createSocket('udp4');
    await new Promise<void>((resolve) => silent.bind(0, '127.0.0.1', () => resolve()));
    try {
      const driver = createPowerDriver({ driver: 'ipmi', address: '127.0.0.1', port: silent.address().port, username: 'admin', password: 'x', timeoutMs: 1500 }, { id: 'x', name: 'mute' });
      await expect(driver.status()).rejects.toMatchObject({ code: expect.stringMatching(/timeout|unavailable/) });
    } finally {
      silent.close();
    }
  });
});

describe('Wake-on-LAN driver', () => {
  it('sends the magic packet as a UDP datagram to the configured address and port', async () => {
    const listener = createSocket('udp4');
    const received = new Promise<Buffer>((resolve) => listener.once('message', (message) => resolve(message)));
    await new Promise<void>((resolve) => listener.bind(0, '127.0.0.1', () => resolve()));
    try {
      const driver = createPowerDriver({ driver: 'wol', mac: '52:54:00:ab:cd:ef', address: '127.0.0.1', port: listener.address().port }, { id: 'x', name: 'sleepy' });
      expect((await applyPower(driver, 'on', { hostName: 'sleepy' })).state).toBe('unknown');
      const packet = await received;
      expect(packet.length).toBe(102);
      expect(packet.subarray(0, 6).equals(Buffer.alloc(6, 0xff))).toBe(true);
      const mac = Buffer.from([0x52, 0x54, 0x00, 0xab, 0xcd, 0xef]);
      for (let i = 0; i < 16; i++) expect(packet.subarray(6 + i * 6, 12 + i * 6).equals(mac)).toBe(true);
      expect(packet.equals(magicPacket('52-54-00-AB-CD-EF'))).toBe(true);
    } finally {
      listener.close();
    }
  });

  it('cannot switch a host off, and refuses a bad MAC', async () => {
    const driver = createPowerDriver({ driver: 'wol', mac: '52:54:00:ab:cd:ef', address: '127.0.0.1' }, { id: 'x', name: 'sleepy' });
    await expect(applyPower(driver, 'off', { hostName: 'sleepy' })).rejects.toMatchObject({ code: 'invalid', message: 'The wol power driver cannot "off"' });
    expect(() => createPowerDriver({ driver: 'wol', mac: '52:54:00:ab:cd', address: '127.0.0.1' }, { id: 'x', name: 'sleepy' })).toThrow(/Invalid MAC address "52:54:00:ab:cd"/);
  });
});

describe('command driver', () => {
  const state = path.join(dir, 'cmd-power');
  const host = { id: 'h-id', name: 'cmd-host' };

  it('runs the on, off and status commands and reads the state back', async () => {
    const script = path.join(dir, 'power.sh');
    writeFileSync(script, `#!/bin/sh\ncase "$1" in\n  on) echo on > "${state}";;\n  off) echo off > "${state}";;\n  status) cat "${state}" 2>/dev/null || echo off;;\nesac\necho "$DROVER_HOST_NAME" > "${state}.who"\n`);
    chmodSync(script, 0o755);
    const driver = createPowerDriver({ driver: 'command', on: `${script} on`, off: `${script} off`, status: `${script} status` }, host);
    expect((await applyPower(driver, 'status', { hostName: host.name })).state).toBe('off');
    expect((await applyPower(driver, 'on', { hostName: host.name })).state).toBe('on');
    expect(readFileSync(state, 'utf8').trim()).toBe('on');
    expect(readFileSync(`${state}.who`, 'utf8').trim()).toBe('cmd-host');
    expect((await applyPower(driver, 'cycle', { hostName: host.name })).state).toBe('on');
    expect((await applyPower(driver, 'off', { hostName: host.name })).state).toBe('off');
  });

  it('kills a command that hangs (and what it started) at the time limit', async () => {
    const marker = path.join(dir, 'hang-pid');
    const driver = createPowerDriver({ driver: 'command', on: `sleep 60 & echo $! > ${marker}; wait`, off: 'true', status: 'echo off', timeoutMs: 500 }, host);
    await expect(applyPower(driver, 'on', { hostName: host.name })).rejects.toMatchObject({ code: 'timeout', message: expect.stringContaining('did not answer within 500 ms') });
    const pid = Number(readFileSync(marker, 'utf8'));
    await new Promise((r) => setTimeout(r, 100));
    expect(existsSync(`/proc/${pid}`) && !/\) Z /.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))).toBe(false);
  });

  it('catches a driver that lies: "off" succeeds but the status stays on', async () => {
    const driver = createPowerDriver({ driver: 'command', on: 'true', off: 'true', status: 'echo on' }, host);
    await expect(applyPower(driver, 'off', { hostName: host.name, verifyMs: 300, pollMs: 50 })).rejects.toMatchObject({
      code: 'unavailable',
      message: 'The command power driver of host "cmd-host" reported "off" done, but the host\'s power is still on after 300 ms',
    });
  });

  it('refuses a status that is neither on nor off, a failing command, and a missing command', async () => {
    const garbled = createPowerDriver({ driver: 'command', on: 'true', off: 'exit 3', status: 'echo maybe' }, host);
    await expect(garbled.status()).rejects.toThrow(/printed "maybe"; it must print "on" or "off"/);
    await expect(garbled.off()).rejects.toThrow(/"off" power command of host "cmd-host" failed with exit 3/);
    expect(() => createPowerDriver({ driver: 'command', on: 'true', off: ' ', status: 'echo on' }, host)).toThrow(/needs a "off" command/);
  });
});
