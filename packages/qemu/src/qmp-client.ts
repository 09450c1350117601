import { EventEmitter } from 'node:events';
import net from 'node:net';
import { DroverError, errors, type ErrorCode } from '@drover/core';
import { moduleLogger } from './log.js';

const log = moduleLogger('drover:qemu:qmp');

const defaultCommandTimeoutMs = 10_000;
const defaultConnectTimeoutMs = 5_000;
const defaultJobTimeoutMs = 300_000;
/** QMP replies are small (query-block of many disks is tens of KiB); a runaway line is a bug. */
const maxLineBytes = 16 * 1024 * 1024;

export interface QmpEvent {
  event: string;
  /** Always an object: QMP omits `data` for events such as RESUME. */
  data: Record<string, unknown>;
  /** As QEMU sends it: wall-clock time of the event on the host. */
  timestamp: { seconds: number; microseconds: number };
}

export interface QmpGreeting {
  version: { qemu: { major: number; minor: number; micro: number }; package: string };
  capabilities: string[];
}

export interface QmpConnectOptions {
  /** Default timeout of every command on this connection (10 s). */
  timeoutMs?: number;
  /** Covers connecting, the greeting and `qmp_capabilities` (5 s). */
  connectTimeoutMs?: number;
}

export interface QmpExecuteOptions {
  timeoutMs?: number;
}

/** QEMU run states (`query-status`), the ones Drover reacts to named explicitly. */
export type QemuRunState =
  | 'running'
  | 'paused'
  | 'prelaunch'
  | 'inmigrate'
  | 'postmigrate'
  | 'finish-migrate'
  | 'shutdown'
  | 'suspended'
  | 'internal-error'
  | 'io-error'
  | 'guest-panicked'
  | 'restore-vm'
  | 'save-vm'
  | 'watchdog'
  | 'debug'
  | 'colo'
  | (string & {});

export interface QemuStatus {
  status: QemuRunState;
  running: boolean;
}

export interface MigrationStats {
  transferred?: number;
  remaining?: number;
  total?: number;
  duplicate?: number;
  normal?: number;
  'normal-bytes'?: number;
  'dirty-pages-rate'?: number;
  mbps?: number;
  'dirty-sync-count'?: number;
  'postcopy-requests'?: number;
  'page-size'?: number;
  'multifd-bytes'?: number;
  'pages-per-second'?: number;
  'precopy-bytes'?: number;
  'downtime-bytes'?: number;
  'postcopy-bytes'?: number;
}

/** `query-migrate`; fields appear only in the states where QEMU fills them. */
export interface MigrationInfo {
  status?:
    | 'none'
    | 'setup'
    | 'cancelling'
    | 'cancelled'
    | 'active'
    | 'postcopy-active'
    | 'postcopy-paused'
    | 'postcopy-recover'
    | 'completed'
    | 'failed'
    | 'colo'
    | 'pre-switchover'
    | 'device'
    | 'wait-unplug'
    | (string & {});
  ram?: MigrationStats;
  'total-time'?: number;
  'expected-downtime'?: number;
  downtime?: number;
  'setup-time'?: number;
  'error-desc'?: string;
  [key: string]: unknown;
}

export interface MigrationCapabilityStatus {
  capability: string;
  state: boolean;
}

/** The migration parameters Drover sets; QEMU accepts more, which pass through untouched. */
export interface MigrationParameters {
  'downtime-limit'?: number;
  'max-bandwidth'?: number;
  'max-postcopy-bandwidth'?: number;
  'multifd-channels'?: number;
  'tls-creds'?: string;
  'tls-hostname'?: string;
  'tls-authz'?: string;
  'announce-initial'?: number;
  [key: string]: unknown;
}

/**
 * Every migration capability Drover uses, off, and `events` on: the base each stream's capabilities
 * are spread over. QEMU keeps capabilities and parameters for the life of its process, so a stream
 * that does not set them inherits the last one's: a save to a file after a live migration would wait
 * for a return path (`return-path`) or at pre-switchover (`pause-before-switchover`) forever.
 */
export const baseMigrationCapabilities: Readonly<Record<string, boolean>> = Object.freeze({
  events: true,
  'return-path': false,
  'pause-before-switchover': false,
  'auto-converge': false,
  'late-block-activate': false,
  multifd: false,
});

/** The parameters of a stream without TLS: a save after a live migration would otherwise want TLS with credentials long deleted. */
export const plainMigrationParameters: Readonly<MigrationParameters> = Object.freeze({ 'tls-creds': '', 'tls-hostname': '', 'tls-authz': '' });

export interface BlockImageInfo {
  filename: string;
  format: string;
  'virtual-size': number;
  'actual-size'?: number;
  'backing-filename'?: string;
  snapshots?: Array<{ id: string; name: string; 'vm-state-size': number; 'date-sec': number; 'date-nsec': number }>;
  [key: string]: unknown;
}

/** One entry of `query-block`. */
export interface BlockInfo {
  device: string;
  qdev?: string;
  removable: boolean;
  locked: boolean;
  'tray_open'?: boolean;
  'io-status'?: string;
  inserted?: {
    'node-name'?: string;
    file: string;
    ro: boolean;
    drv: string;
    image: BlockImageInfo;
    [key: string]: unknown;
  };
  [key: string]: unknown;
}

export interface JobInfo {
  id: string;
  type: string;
  status: string;
  'current-progress': number;
  'total-progress': number;
  error?: string;
}

export interface SnapshotJobOptions {
  /** Job id; unique per QEMU. Generated when omitted. */
  jobId?: string;
  /** How long the whole job may take (default 300 s); each QMP command keeps its own timeout. */
  timeoutMs?: number;
}

export interface SnapshotSaveOptions extends SnapshotJobOptions {
  /** Node-name of the format node that receives the VM state (RAM and devices). */
  vmstate: string;
  /** Node-names of every writable disk of the VM; read-only media are left out. */
  devices: string[];
}

export type SnapshotLoadOptions = SnapshotSaveOptions;

export interface SnapshotDeleteOptions extends SnapshotJobOptions {
  devices: string[];
}

/** A QMP `{"error": {"class", "desc"}}` reply; `qmpClass` says which one. */
export class QmpCommandError extends DroverError {
  readonly qmpClass: string;
  readonly command: string;
  readonly desc: string;

  constructor(command: string, qmpClass: string, desc: string) {
    super(codeOfQmpClass(qmpClass), `QMP command "${command}" failed: ${desc}`, {
      details: { qmpClass, command, desc },
    });
    this.name = 'QmpCommandError';
    this.qmpClass = qmpClass;
    this.command = command;
    this.desc = desc;
  }
}

/** A QEMU job (snapshot-save, ...) that ran and concluded with an error. */
export class QmpJobError extends DroverError {
  readonly jobId: string;
  readonly command: string;

  constructor(command: string, jobId: string, message: string) {
    // QEMU has no error classes for jobs; "does not exist" is the one case callers branch on.
    const code: ErrorCode = /does not exist/i.test(message) ? 'not_found' : 'invalid';
    super(code, `QEMU job "${jobId}" (${command}) failed: ${message}`, { details: { command, jobId, jobError: message } });
    this.name = 'QmpJobError';
    this.jobId = jobId;
    this.command = command;
  }
}

function codeOfQmpClass(qmpClass: string): ErrorCode {
  switch (qmpClass) {
    case 'DeviceNotFound':
      return 'not_found';
    case 'DeviceNotActive':
      return 'conflict';
    case 'KVMMissingCap':
      return 'unavailable';
    default:
      // GenericError covers nearly everything, CommandNotFound means we asked for something
      // this QEMU does not have: both are a bad request from QEMU's point of view.
      return 'invalid';
  }
}

interface PendingCommand {
  command: string;
  resolve: (value: unknown) => void;
  reject: (error: Error) => void;
  timer: NodeJS.Timeout;
}

interface EventWaiter {
  promise: Promise<QmpEvent>;
  cancel: () => void;
}

/**
 * A QMP client over a unix socket. Replies are matched to requests by `id`, so events
 * interleaved with replies never confuse it; every command has a timeout.
 *
 * Emits `event` (QmpEvent) for every QMP event and `close` when the socket closes.
 *
 * @example
 * const qmp = await QmpClient.connect('/run/drover/vm1/qmp.sock');
 * const { status } = await qmp.queryStatus();
 */
export class QmpClient extends EventEmitter {
  readonly socketPath: string;
  private readonly socket: net.Socket;
  private readonly defaultTimeoutMs: number;
  private readonly pending = new Map<string, PendingCommand>();
  private buffer = '';
  private nextId = 1;
  private nextJob = 1;
  private isClosed = false;
  private socketError: Error | undefined;
  private greetingValue: QmpGreeting | undefined;
  private onGreeting: ((greeting: QmpGreeting) => void) | undefined;

  private constructor(socket: net.Socket, socketPath: string, defaultTimeoutMs: number) {
    super();
    // The agent may wait for several events at once (migration + block jobs).
    this.setMaxListeners(100);
    this.socket = socket;
    this.socketPath = socketPath;
    this.defaultTimeoutMs = defaultTimeoutMs;
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.onData(chunk));
    socket.on('error', (error) => {
      this.socketError = error;
      log.debug({ socketPath, err: error }, 'QMP socket error');
    });
    socket.on('close', () => this.onClose());
  }

  /** Connects, reads the greeting and leaves capabilities negotiation mode. */
  static async connect(socketPath: string, options: QmpConnectOptions = {}): Promise<QmpClient> {
    const connectTimeoutMs = options.connectTimeoutMs ?? defaultConnectTimeoutMs;
    const socket = net.createConnection({ path: socketPath });
    const client = new QmpClient(socket, socketPath, options.timeoutMs ?? defaultCommandTimeoutMs);
    const started = Date.now();
    try {
      await client.readGreeting(connectTimeoutMs);
      const remaining = Math.max(1, connectTimeoutMs - (Date.now() - started));
      await client.execute('qmp_capabilities', undefined, { timeoutMs: remaining });
    } catch (error) {
      socket.destroy();
      throw error;
    }
    log.debug({ socketPath, version: client.version }, 'QMP connected');
    return client;
  }

  get greeting(): QmpGreeting | undefined {
    return this.greetingValue;
  }

  /** QEMU version as `major.minor.micro`, e.g. `7.2.22`. */
  get version(): string | undefined {
    const v = this.greetingValue?.version.qemu;
    return v === undefined ? undefined : `${v.major}.${v.minor}.${v.micro}`;
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Runs one QMP command. Rejects with a `QmpCommandError` on a QMP error, `timeout` when
   * no reply arrives in time and `unavailable` when the connection closes first. `quit`
   * counts as successful when QEMU closes the socket before its reply arrives.
   */
  execute<T = unknown>(command: string, args?: object, options: QmpExecuteOptions = {}): Promise<T> {
    if (this.isClosed) {
      return Promise.reject(
        errors.unavailable(`Cannot run QMP command "${command}": the connection to "${this.socketPath}" is closed`, {
          command,
          socketPath: this.socketPath,
        }),
      );
    }
    const id = `drover-${this.nextId++}`;
    const timeoutMs = options.timeoutMs ?? this.defaultTimeoutMs;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(
          errors.timeout(`QMP command "${command}" got no reply within ${timeoutMs} ms`, {
            command,
            timeoutMs,
            socketPath: this.socketPath,
          }),
        );
      }, timeoutMs);
      this.pending.set(id, { command, resolve: resolve as (value: unknown) => void, reject, timer });
      const request = args === undefined ? { execute: command, id } : { execute: command, arguments: args, id };
      log.debug({ socketPath: this.socketPath, id, command }, 'QMP request');
      this.socket.write(`${JSON.stringify(request)}\n`);
    });
  }

  /**
   * Resolves with the next event `name` whose data satisfies `predicate`. Start waiting
   * *before* sending the command that causes the event: it may arrive right behind the reply.
   */
  waitForEvent(
    name: string,
    predicate?: (data: Record<string, unknown>, event: QmpEvent) => boolean,
    timeoutMs = this.defaultTimeoutMs,
  ): Promise<QmpEvent> {
    return this.eventWaiter(name, predicate, timeoutMs).promise;
  }

  /** Closes the connection; pending commands reject with `unavailable`. */
  close(): Promise<void> {
    if (this.isClosed) return Promise.resolve();
    return new Promise((resolve) => {
      this.once('close', () => resolve());
      this.socket.destroy();
    });
  }

  async queryStatus(): Promise<QemuStatus> {
    const reply = await this.execute<{ status: string; running: boolean }>('query-status');
    return { status: reply.status, running: reply.running };
  }

  async cont(): Promise<void> {
    await this.execute('cont');
  }

  async stop(): Promise<void> {
    await this.execute('stop');
  }

  /** ACPI power button: the guest decides whether and when to shut down. */
  async systemPowerdown(): Promise<void> {
    await this.execute('system_powerdown');
  }

  async systemReset(): Promise<void> {
    await this.execute('system_reset');
  }

  /** Ends QEMU at once (no guest shutdown). */
  async quit(): Promise<void> {
    await this.execute('quit');
  }

  queryMigrate(): Promise<MigrationInfo> {
    return this.execute<MigrationInfo>('query-migrate');
  }

  /** @example await qmp.migrateSetCapabilities({ events: true, 'return-path': true }) */
  async migrateSetCapabilities(
    capabilities: Record<string, boolean> | MigrationCapabilityStatus[],
  ): Promise<void> {
    const list = Array.isArray(capabilities)
      ? capabilities
      : Object.entries(capabilities).map(([capability, state]) => ({ capability, state }));
    await this.execute('migrate-set-capabilities', { capabilities: list });
  }

  async migrateSetParameters(parameters: MigrationParameters): Promise<void> {
    await this.execute('migrate-set-parameters', parameters);
  }

  queryMigrateParameters(): Promise<MigrationParameters> {
    return this.execute<MigrationParameters>('query-migrate-parameters');
  }

  /** Starts an outgoing migration; progress arrives as MIGRATION events (capability `events`). */
  async migrate(uri: string, options: { resume?: boolean } = {}): Promise<void> {
    await this.execute('migrate', options.resume === true ? { uri, resume: true } : { uri });
  }

  /** Starts listening on a destination started with `-incoming defer`. */
  async migrateIncoming(uri: string): Promise<void> {
    await this.execute('migrate-incoming', { uri });
  }

  /** Leaves `pre-switchover` (capability `pause-before-switchover`). */
  async migrateContinue(state = 'pre-switchover'): Promise<void> {
    await this.execute('migrate-continue', { state });
  }

  async migrateCancel(): Promise<void> {
    await this.execute('migrate_cancel');
  }

  /** Fails a stuck migration at once instead of waiting for TCP to give up. */
  async yankMigration(): Promise<void> {
    await this.execute('yank', { instances: [{ type: 'migration' }] });
  }

  /**
   * Saves an internal snapshot (disks and VM state) with the job-based `snapshot-save`.
   * A running guest is paused for the save and resumed afterwards by QEMU.
   */
  async snapshotSave(tag: string, options: SnapshotSaveOptions): Promise<void> {
    await this.runJob(
      'snapshot-save',
      { tag, vmstate: options.vmstate, devices: options.devices },
      options,
    );
  }

  /**
   * Loads an internal snapshot. QEMU stops the guest for the load and restarts it only
   * when the load succeeded and the guest was running: after a failure it stays paused.
   */
  async snapshotLoad(tag: string, options: SnapshotLoadOptions): Promise<void> {
    await this.runJob(
      'snapshot-load',
      { tag, vmstate: options.vmstate, devices: options.devices },
      options,
    );
  }

  async snapshotDelete(tag: string, options: SnapshotDeleteOptions): Promise<void> {
    await this.runJob('snapshot-delete', { tag, devices: options.devices }, options);
  }

  queryJobs(): Promise<JobInfo[]> {
    return this.execute<JobInfo[]>('query-jobs');
  }

  async jobDismiss(id: string): Promise<void> {
    await this.execute('job-dismiss', { id });
  }

  /** Runs a human monitor (HMP) command such as `info snapshots` and returns its text. */
  humanMonitorCommand(commandLine: string, options: QmpExecuteOptions = {}): Promise<string> {
    return this.execute<string>('human-monitor-command', { 'command-line': commandLine }, options);
  }

  queryBlock(): Promise<BlockInfo[]> {
    return this.execute<BlockInfo[]>('query-block');
  }

  /** Adds a block node (`blockdev-add`), e.g. `{ driver: 'file', filename, 'node-name' }`. */
  async blockdevAdd(node: Record<string, unknown>): Promise<void> {
    await this.execute('blockdev-add', node);
  }

  /** Removes a block node no device uses any more. */
  async blockdevDel(nodeName: string): Promise<void> {
    await this.execute('blockdev-del', { 'node-name': nodeName });
  }

  /** Adds a device (`device_add`); `driver` and `id` among the properties. */
  async deviceAdd(props: Record<string, unknown>): Promise<void> {
    await this.execute('device_add', props);
  }

  /**
   * Asks for a device's removal (`device_del`). On q35 this only presses the slot's
   * button: the device goes when the guest releases it, which the `DEVICE_DELETED`
   * event reports (see `unplugDevice` in hotplug.ts).
   */
  async deviceDel(id: string): Promise<void> {
    await this.execute('device_del', { id });
  }

  async netdevAdd(netdev: Record<string, unknown>): Promise<void> {
    await this.execute('netdev_add', netdev);
  }

  async netdevDel(id: string): Promise<void> {
    await this.execute('netdev_del', { id });
  }

  /** The children of a QOM path, e.g. `/machine/peripheral` lists the devices that have an id. */
  qomList(path: string): Promise<Array<{ name: string; type: string }>> {
    return this.execute<Array<{ name: string; type: string }>>('qom-list', { path });
  }

  private async runJob(command: string, args: Record<string, unknown>, options: SnapshotJobOptions): Promise<void> {
    const jobId = options.jobId ?? `drover-${command}-${process.pid}-${this.nextJob++}`;
    const timeoutMs = options.timeoutMs ?? defaultJobTimeoutMs;
    // Registered before the command: a quick job concludes right behind the reply.
    const concluded = this.eventWaiter(
      'JOB_STATUS_CHANGE',
      (data) => data.id === jobId && data.status === 'concluded',
      timeoutMs,
    );
    // Marked as handled now: it may time out while the command itself is still in flight.
    concluded.promise.catch(() => {});
    try {
      await this.execute(command, { 'job-id': jobId, ...args });
    } catch (error) {
      concluded.cancel();
      throw error;
    }
    try {
      await concluded.promise;
    } catch (error) {
      if (error instanceof DroverError && error.code === 'timeout') {
        throw errors.timeout(`QEMU job "${jobId}" (${command}) did not conclude within ${timeoutMs} ms`, {
          command,
          jobId,
          timeoutMs,
        });
      }
      throw error;
    }
    const job = (await this.queryJobs()).find((candidate) => candidate.id === jobId);
    await this.jobDismiss(jobId);
    if (job?.error !== undefined) throw new QmpJobError(command, jobId, job.error);
  }

  private eventWaiter(
    name: string,
    predicate: ((data: Record<string, unknown>, event: QmpEvent) => boolean) | undefined,
    timeoutMs: number,
  ): EventWaiter {
    let cancel = (): void => {};
    const promise = new Promise<QmpEvent>((resolve, reject) => {
      if (this.isClosed) {
        reject(errors.unavailable(`Cannot wait for QMP event "${name}": the connection is closed`, { event: name }));
        return;
      }
      const cleanup = (): void => {
        clearTimeout(timer);
        this.off('event', onEvent);
        this.off('close', onClose);
      };
      const onEvent = (event: QmpEvent): void => {
        if (event.event !== name) return;
        try {
          if (predicate !== undefined && !predicate(event.data, event)) return;
        } catch (error) {
          cleanup();
          reject(error instanceof Error ? error : new Error(String(error)));
          return;
        }
        cleanup();
        resolve(event);
      };
      const onClose = (): void => {
        cleanup();
        reject(
          errors.unavailable(`QMP connection to "${this.socketPath}" closed while waiting for event "${name}"`, {
            event: name,
            socketPath: this.socketPath,
          }),
        );
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(errors.timeout(`QMP event "${name}" did not arrive within ${timeoutMs} ms`, { event: name, timeoutMs }));
      }, timeoutMs);
      this.on('event', onEvent);
      this.on('close', onClose);
      // A cancelled waiter just stops listening; nobody awaits its promise any more.
      cancel = cleanup;
    });
    return { promise, cancel };
  }

  private readGreeting(timeoutMs: number): Promise<QmpGreeting> {
    return new Promise<QmpGreeting>((resolve, reject) => {
      const done = (): void => {
        clearTimeout(timer);
        this.onGreeting = undefined;
        this.off('close', onClose);
      };
      const timer = setTimeout(() => {
        done();
        reject(
          errors.timeout(`QMP socket "${this.socketPath}" sent no greeting within ${timeoutMs} ms`, {
            socketPath: this.socketPath,
            timeoutMs,
          }),
        );
      }, timeoutMs);
      const onClose = (): void => {
        done();
        const cause = this.socketError;
        const reason = cause === undefined ? 'the socket closed before the greeting' : cause.message;
        reject(
          errors.unavailable(
            `Cannot connect to QMP socket "${this.socketPath}": ${reason}`,
            { socketPath: this.socketPath, errno: (cause as NodeJS.ErrnoException | undefined)?.code },
            cause,
          ),
        );
      };
      this.onGreeting = (greeting) => {
        done();
        resolve(greeting);
      };
      this.once('close', onClose);
    });
  }

  private onData(chunk: string): void {
    this.buffer += chunk;
    let newline = this.buffer.indexOf('\n');
    while (newline >= 0) {
      const line = this.buffer.slice(0, newline).trim();
      this.buffer = this.buffer.slice(newline + 1);
      if (line.length > 0) this.onLine(line);
      newline = this.buffer.indexOf('\n');
    }
    if (this.buffer.length > maxLineBytes) {
      log.warn({ socketPath: this.socketPath }, 'QMP line too long; closing the connection');
      this.socket.destroy();
    }
  }

  private onLine(line: string): void {
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(line) as Record<string, unknown>;
    } catch {
      log.warn({ socketPath: this.socketPath, line: line.slice(0, 200) }, 'QMP sent a line that is not JSON');
      return;
    }
    if ('QMP' in message) {
      this.greetingValue = message.QMP as QmpGreeting;
      this.onGreeting?.(this.greetingValue);
      return;
    }
    if (typeof message.event === 'string') {
      const event: QmpEvent = {
        event: message.event,
        data: (message.data as Record<string, unknown> | undefined) ?? {},
        timestamp: (message.timestamp as QmpEvent['timestamp'] | undefined) ?? { seconds: 0, microseconds: 0 },
      };
      log.debug({ socketPath: this.socketPath, event: event.event }, 'QMP event');
      this.emit('event', event);
      return;
    }
    if ('return' in message || 'error' in message) this.onReply(message);
  }

  private onReply(message: Record<string, unknown>): void {
    let id = typeof message.id === 'string' ? message.id : undefined;
    // QEMU answers a request it could not parse without an id; replies come in order,
    // so it belongs to the oldest command still waiting.
    if (id === undefined && !('id' in message)) id = this.pending.keys().next().value;
    const pending = id === undefined ? undefined : this.pending.get(id);
    if (id === undefined || pending === undefined) {
      log.debug({ socketPath: this.socketPath, id: message.id }, 'QMP reply for no waiting command (timed out?)');
      return;
    }
    this.pending.delete(id);
    clearTimeout(pending.timer);
    const error = message.error as { class?: string; desc?: string } | undefined;
    if (error !== undefined) {
      pending.reject(new QmpCommandError(pending.command, error.class ?? 'GenericError', error.desc ?? 'unknown error'));
    } else {
      pending.resolve(message.return);
    }
  }

  private onClose(): void {
    if (this.isClosed) return;
    this.isClosed = true;
    for (const [id, pending] of this.pending) {
      this.pending.delete(id);
      clearTimeout(pending.timer);
      // QEMU may close the socket on `quit` before its reply is flushed: the goal is reached.
      if (pending.command === 'quit') {
        pending.resolve({});
        continue;
      }
      pending.reject(
        errors.unavailable(
          `QMP connection to "${this.socketPath}" closed before command "${pending.command}" replied`,
          { command: pending.command, socketPath: this.socketPath },
          this.socketError,
        ),
      );
    }
    log.debug({ socketPath: this.socketPath }, 'QMP connection closed');
    this.emit('close');
  }
}
