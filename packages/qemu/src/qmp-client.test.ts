import { spawn, execFileSync, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { rejectionOf } from '@drover/core';
import { QmpClient, QmpCommandError, QmpJobError, type QmpEvent } from './qmp-client.js';

const greeting = {
  QMP: { version: { qemu: { major: 7, minor: 2, micro: 22 }, package: 'fake' }, capabilities: ['oob'] },
};

interface Request {
  execute: string;
  arguments?: Record<string, unknown>;
  id?: string;
}

type Handler = (request: Request, send: (message: object) => void, socket: net.Socket) => void;

/** A QMP server speaking just enough of the protocol, driven by `handler`. */
async function fakeQmpServer(path: string, handler: Handler, options: { silent?: boolean } = {}): Promise<net.Server> {
  const server = net.createServer((socket) => {
    socket.on('error', () => {});
    if (options.silent === true) return;
    const send = (message: object): void => {
      socket.write(`${JSON.stringify(message)}\r\n`);
    };
    send(greeting);
    let buffer = '';
    socket.on('data', (chunk) => {
      buffer += chunk.toString('utf8');
      let newline = buffer.indexOf('\n');
      while (newline >= 0) {
        const request = JSON.parse(buffer.slice(0, newline)) as Request;
        buffer = buffer.slice(newline + 1);
        if (request.execute === 'qmp_capabilities') send({ return: {}, id: request.id });
        else handler(request, send, socket);
        newline = buffer.indexOf('\n');
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(path, resolve));
  return server;
}

function event(name: string, data?: object): object {
  return { event: name, ...(data === undefined ? {} : { data }), timestamp: { seconds: 1, microseconds: 2 } };
}


describe('QmpClient with a fake QMP server', () => {
  let dir: string;
  let counter = 0;
  const servers: net.Server[] = [];
  const clients: QmpClient[] = [];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-qmp-'));
  });
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((client) => client.close()));
    await Promise.all(servers.splice(0).map((server) => new Promise((resolve) => server.close(resolve))));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function serve(handler: Handler, options: { silent?: boolean } = {}): Promise<string> {
    const path = join(dir, `qmp-${counter++}.sock`);
    servers.push(await fakeQmpServer(path, handler, options));
    return path;
  }

  async function connect(path: string, options = {}): Promise<QmpClient> {
    const client = await QmpClient.connect(path, options);
    clients.push(client);
    return client;
  }

  it('reads the greeting, negotiates capabilities and runs a command', async () => {
    const seen: Request[] = [];
    const path = await serve((request, send) => {
      seen.push(request);
      send({ return: { status: 'running', singlestep: false, running: true }, id: request.id });
    });
    const client = await connect(path);
    expect(client.version).toBe('7.2.22');
    await expect(client.queryStatus()).resolves.toEqual({ status: 'running', running: true });
    expect(seen[0]?.execute).toBe('query-status');
    expect(typeof seen[0]?.id).toBe('string');
  });

  it('matches replies by id even when they come out of order between events', async () => {
    const held: Request[] = [];
    const path = await serve((request, send) => {
      held.push(request);
      if (held.length < 2) return;
      // Answer the second request first, with events around both replies.
      send(event('STOP'));
      send({ return: `reply-to-${held[1]?.arguments?.n}`, id: held[1]?.id });
      send(event('RESUME'));
      send({ return: `reply-to-${held[0]?.arguments?.n}`, id: held[0]?.id });
      send(event('SHUTDOWN', { guest: true }));
    });
    const client = await connect(path);
    const events: QmpEvent[] = [];
    client.on('event', (e: QmpEvent) => events.push(e));
    const shutdown = client.waitForEvent('SHUTDOWN', (data) => data.guest === true);
    const [first, second] = await Promise.all([client.execute('echo', { n: 1 }), client.execute('echo', { n: 2 })]);
    expect(first).toBe('reply-to-1');
    expect(second).toBe('reply-to-2');
    await expect(shutdown).resolves.toMatchObject({ event: 'SHUTDOWN', data: { guest: true } });
    expect(events.map((e) => e.event)).toEqual(['STOP', 'RESUME', 'SHUTDOWN']);
    expect(events[0]).toEqual({ event: 'STOP', data: {}, timestamp: { seconds: 1, microseconds: 2 } });
  });

  it('turns a QMP error into a QmpCommandError carrying the QMP class', async () => {
    const path = await serve((request, send) => {
      const qmpClass = request.execute === 'device_del' ? 'DeviceNotFound' : 'GenericError';
      send({ error: { class: qmpClass, desc: `cannot ${request.execute}` }, id: request.id });
    });
    const client = await connect(path);
    const generic = await rejectionOf(client.cont());
    expect(generic).toBeInstanceOf(QmpCommandError);
    expect(generic.code).toBe('invalid');
    expect(generic.details).toEqual({ qmpClass: 'GenericError', command: 'cont', desc: 'cannot cont' });
    expect(generic.message).toContain('"cont"');
    const missing = await rejectionOf(client.execute('device_del', { id: 'x' }));
    expect((missing as QmpCommandError).qmpClass).toBe('DeviceNotFound');
    expect(missing.code).toBe('not_found');
  });

  it('times out a connect to a socket that never greets instead of hanging', async () => {
    const path = await serve(() => {}, { silent: true });
    const error = await rejectionOf(QmpClient.connect(path, { connectTimeoutMs: 300 }));
    expect(error.code).toBe('timeout');
    expect(error.message).toContain('greeting');
  });

  it('reports a missing socket as unavailable', async () => {
    const error = await rejectionOf(QmpClient.connect(join(dir, 'nobody-here.sock')));
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('nobody-here.sock');
  });

  it('times out a command with no reply, names it, and keeps the connection usable', async () => {
    let late: (() => void) | undefined;
    const path = await serve((request, send) => {
      if (request.execute === 'slow') {
        late = () => send({ return: 'too late', id: request.id });
        return;
      }
      send({ return: 'fast', id: request.id });
    });
    const client = await connect(path);
    const error = await rejectionOf(client.execute('slow', undefined, { timeoutMs: 200 }));
    expect(error.code).toBe('timeout');
    expect(error.message).toContain('"slow"');
    late?.();
    await expect(client.execute('quick')).resolves.toBe('fast');
  });

  it('counts quit as successful when QEMU closes the socket without replying', async () => {
    const path = await serve((request, _send, socket) => {
      if (request.execute === 'quit') socket.destroy();
    });
    const client = await connect(path);
    const closed = new Promise((resolve) => client.once('close', resolve));
    await expect(client.quit()).resolves.toBeUndefined();
    await closed;
    expect(client.closed).toBe(true);
  });

  it('rejects pending commands and event waiters as unavailable when the socket closes', async () => {
    const path = await serve((request, _send, socket) => {
      if (request.execute === 'hang-up') socket.destroy();
    });
    const client = await connect(path);
    const waiting = client.waitForEvent('RESUME', undefined, 5_000);
    const error = await rejectionOf(client.execute('hang-up'));
    expect(error.code).toBe('unavailable');
    expect(error.message).toContain('"hang-up"');
    expect((await rejectionOf(waiting)).code).toBe('unavailable');
    expect((await rejectionOf(client.execute('after'))).code).toBe('unavailable');
  });

  it('times out an event that never comes', async () => {
    const path = await serve(() => {});
    const client = await connect(path);
    const error = await rejectionOf(client.waitForEvent('MIGRATION', undefined, 150));
    expect(error.code).toBe('timeout');
    expect(error.message).toContain('MIGRATION');
  });

  it('runs a snapshot job: waits for concluded, checks query-jobs, dismisses', async () => {
    const calls: string[] = [];
    let failing = false;
    const path = await serve((request, send) => {
      calls.push(request.execute);
      const jobId = request.arguments?.['job-id'] as string | undefined;
      if (request.execute === 'snapshot-load') {
        failing = true;
        send({ return: {}, id: request.id });
        send(event('JOB_STATUS_CHANGE', { id: jobId, status: 'concluded' }));
      } else if (request.execute === 'snapshot-save') {
        // Concluded arrives in the same burst as the reply: the waiter must already listen.
        send(event('JOB_STATUS_CHANGE', { id: jobId, status: 'running' }));
        send({ return: {}, id: request.id });
        send(event('JOB_STATUS_CHANGE', { id: 'other-job', status: 'concluded' }));
        send(event('JOB_STATUS_CHANGE', { id: jobId, status: 'concluded' }));
      } else if (request.execute === 'query-jobs') {
        const error = failing ? { error: "Snapshot 'nope' does not exist in one or more devices" } : {};
        send({ return: [{ id: 'job-1', type: 'snapshot', status: 'concluded', 'current-progress': 1, 'total-progress': 1, ...error }], id: request.id });
      } else {
        send({ return: {}, id: request.id });
      }
    });
    const client = await connect(path);
    await client.snapshotSave('s1', { vmstate: 'disk0', devices: ['disk0'], jobId: 'job-1' });
    expect(calls).toEqual(['snapshot-save', 'query-jobs', 'job-dismiss']);
    const error = await rejectionOf(client.snapshotLoad('nope', { vmstate: 'disk0', devices: ['disk0'], jobId: 'job-1' }));
    expect(error).toBeInstanceOf(QmpJobError);
    expect(error.code).toBe('not_found');
    expect(error.message).toContain("Snapshot 'nope' does not exist");
    expect(calls.slice(3)).toEqual(['snapshot-load', 'query-jobs', 'job-dismiss']);
  });
});

describe('QmpClient against a real QEMU', () => {
  let dir: string;
  let qemu: ChildProcess | undefined;
  let client: QmpClient | undefined;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'drover-qmp-real-'));
    const image = join(dir, 'disk.qcow2');
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', image, '16M']);
    const socketPath = join(dir, 'qmp.sock');
    qemu = spawn(
      'qemu-system-x86_64',
      [
        '-machine', 'none', '-nodefaults', '-no-user-config', '-display', 'none',
        '-qmp', `unix:${socketPath},server=on,wait=off`,
        '-blockdev', `driver=file,filename=${image},node-name=disk0-file`,
        '-blockdev', 'driver=qcow2,file=disk0-file,node-name=disk0',
      ],
      { stdio: 'ignore' },
    );
    for (let attempt = 0; client === undefined; attempt++) {
      try {
        client = await QmpClient.connect(socketPath);
      } catch (error) {
        if (attempt > 100) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    }
  });

  afterAll(async () => {
    await client?.close();
    if (qemu?.pid !== undefined && qemu.exitCode === null && qemu.signalCode === null) {
      const exited = new Promise((resolve) => qemu?.once('exit', resolve));
      process.kill(qemu.pid, 'SIGKILL');
      await exited;
    }
    await rm(dir, { recursive: true, force: true });
  });

  it('speaks QMP: status, events, errors, snapshots, HMP and quit', async () => {
    const qmp = client as QmpClient;
    expect(qmp.version).toMatch(/^\d+\.\d+\.\d+$/);
    expect(await qmp.queryStatus()).toEqual({ status: 'running', running: true });

    const stopped = qmp.waitForEvent('STOP');
    await qmp.stop();
    await stopped;
    expect((await qmp.queryStatus()).status).toBe('paused');

    const notFound = await rejectionOf(qmp.execute('no-such-command'));
    expect((notFound as QmpCommandError).qmpClass).toBe('CommandNotFound');
    expect(notFound.code).toBe('invalid');

    await qmp.snapshotSave('first', { vmstate: 'disk0', devices: ['disk0'] });
    const block = await qmp.execute<Array<{ 'node-name': string; image: { snapshots?: Array<{ name: string }> } }>>(
      'query-named-block-nodes',
    );
    const disk = block.find((node) => node['node-name'] === 'disk0');
    expect(disk?.image.snapshots?.map((s) => s.name)).toEqual(['first']);
    expect(await qmp.humanMonitorCommand('info snapshots')).toContain('first');
    await qmp.snapshotLoad('first', { vmstate: 'disk0', devices: ['disk0'] });
    const missing = await rejectionOf(qmp.snapshotLoad('missing', { vmstate: 'disk0', devices: ['disk0'] }));
    expect(missing).toBeInstanceOf(QmpJobError);
    await qmp.snapshotDelete('first', { devices: ['disk0'] });
    expect(await qmp.humanMonitorCommand('info snapshots')).not.toContain('first');
    expect(await qmp.queryJobs()).toEqual([]);

    expect(Array.isArray(await qmp.queryBlock())).toBe(true);
    // snapshot-save runs through the migration code, so the last "migration" shows as completed.
    expect((await qmp.queryMigrate()).status).toBe('completed');
    await qmp.migrateSetCapabilities({ events: true });
    await qmp.migrateSetParameters({ 'downtime-limit': 250 });
    expect((await qmp.queryMigrateParameters())['downtime-limit']).toBe(250);

    const exited = new Promise((resolve) => qemu?.once('exit', resolve));
    const closed = new Promise((resolve) => qmp.once('close', resolve));
    await qmp.quit();
    await closed;
    await exited;
  });
});
