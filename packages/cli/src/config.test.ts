import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { configFilePath, loadConfig, maskToken, readConfigFile, resolveConfig, writeConfigValue } from './config.js';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'drover-cli-config-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('config resolution', () => {
  const file = { url: 'http://file:1', token: 'file-token' };

  it('takes the flag over the environment over the file', () => {
    const env = { DROVER_URL: 'http://env:2', DROVER_TOKEN: 'env-token' };
    expect(resolveConfig({ url: 'http://flag:3', token: 'flag-token' }, env, file, 'f')).toMatchObject({
      url: 'http://flag:3',
      token: 'flag-token',
      sources: { url: 'flag', token: 'flag' },
    });
    expect(resolveConfig({}, env, file, 'f')).toMatchObject({ url: 'http://env:2', token: 'env-token', sources: { url: 'env', token: 'env' } });
    expect(resolveConfig({}, {}, file, 'f')).toMatchObject({ url: 'http://file:1', token: 'file-token', sources: { url: 'file', token: 'file' } });
    // Each value is resolved on its own.
    expect(resolveConfig({ token: 'flag-token' }, { DROVER_URL: 'http://env:2' }, file, 'f')).toMatchObject({
      url: 'http://env:2',
      token: 'flag-token',
    });
  });

  it('treats empty values as unset and says how to give a URL when there is none', () => {
    expect(resolveConfig({}, { DROVER_URL: '' }, { url: 'http://file:1' }, 'f').url).toBe('http://file:1');
    expect(() => resolveConfig({}, {}, {}, '/x/config.yaml')).toThrow(/No manager URL: pass --url, set DROVER_URL, or run "drover config set url URL"/);
    expect(resolveConfig({}, { DROVER_URL: 'http://m' }, {}, 'f').token).toBeUndefined();
  });

  it('refuses a token that cannot go into a header', () => {
    expect(() => resolveConfig({}, { DROVER_URL: 'http://m', DROVER_TOKEN: 'abc\n' }, {}, 'f')).toThrow(/DROVER_TOKEN contains spaces or control characters/);
  });

  it('finds the file under XDG_CONFIG_HOME, else ~/.config', () => {
    expect(configFilePath({ XDG_CONFIG_HOME: '/xdg', HOME: '/home/u' })).toBe('/xdg/drover/config.yaml');
    expect(configFilePath({ XDG_CONFIG_HOME: 'relative', HOME: '/home/u' })).toBe('/home/u/.config/drover/config.yaml');
    expect(configFilePath({ HOME: '/home/u' })).toBe('/home/u/.config/drover/config.yaml');
  });

  it('loads the file end to end, lowest in precedence', async () => {
    const xdg = tempDir();
    mkdirSync(path.join(xdg, 'drover'));
    writeFileSync(path.join(xdg, 'drover', 'config.yaml'), 'url: http://file:1\ntoken: file-token\n');
    expect(await loadConfig({}, { XDG_CONFIG_HOME: xdg })).toMatchObject({ url: 'http://file:1', token: 'file-token' });
    expect(await loadConfig({}, { XDG_CONFIG_HOME: xdg, DROVER_TOKEN: 'env-token' })).toMatchObject({ url: 'http://file:1', token: 'env-token' });
    expect(await loadConfig({ url: 'http://flag:3' }, { XDG_CONFIG_HOME: xdg, DROVER_URL: 'http://env:2' })).toMatchObject({ url: 'http://flag:3', token: 'file-token' });
  });

  it('names the bad key or the YAML error in the file', async () => {
    const dir = tempDir();
    const file = path.join(dir, 'config.yaml');
    writeFileSync(file, 'url: http://m\nendpoint: x\n');
    await expect(readConfigFile(file)).rejects.toThrow(/unknown key "endpoint"/);
    writeFileSync(file, 'url: [unclosed\n');
    await expect(readConfigFile(file)).rejects.toThrow(/is not valid YAML/);
    writeFileSync(file, 'token: 42\n');
    await expect(readConfigFile(file)).rejects.toThrow(/"token" must be a string/);
    expect(await readConfigFile(path.join(dir, 'missing.yaml'))).toEqual({});
  });
});

describe('writeConfigValue', () => {
  it('writes the file 0600 in a 0700 directory, keeping other keys and comments', async () => {
    const file = path.join(tempDir(), 'drover', 'config.yaml');
    await writeConfigValue(file, 'url', 'http://m:8300');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(statSync(path.dirname(file)).mode & 0o777).toBe(0o700);
    writeFileSync(file, '# my manager\nurl: http://m:8300\n', { mode: 0o644 });
    await writeConfigValue(file, 'token', 'sekrit-token');
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const text = readFileSync(file, 'utf8');
    expect(text).toContain('# my manager');
    expect(await readConfigFile(file)).toEqual({ url: 'http://m:8300', token: 'sekrit-token' });
    await writeConfigValue(file, 'token', undefined);
    expect(await readConfigFile(file)).toEqual({ url: 'http://m:8300' });
  });

  it('refuses a bad URL before writing', async () => {
    const file = path.join(tempDir(), 'config.yaml');
    await expect(writeConfigValue(file, 'url', 'ftp://m')).rejects.toThrow(/scheme must be http or https/);
  });

  it('masks tokens for display', () => {
    expect(maskToken('abcdefghijklmnop')).toBe('abcd…op');
    expect(maskToken('short')).toBe('********');
    expect(maskToken(undefined)).toBe('(none)');
  });
});
