/**
 * One serial port bridged to the broker: open with capped back-off, read lines through a bounded
 * splitter, publish readings through the adapter context, write commands back, and keep a status
 * that is published retained and read by metrics.
 */
import { isUtf8 } from 'node:buffer';
import { errorMessage, RateLimitedLog, type GatewayContext, type LogFields, type Message, type PublishProperties } from '../../gateway/broker';
import { backoffDelay } from './backoff';
import { BoundedQueue } from './bounded-queue';
import { discoveryMessage } from './discovery';
import { DROP_REASONS, hasBinary, parseLine, type DropReason, type ParseOptions, type Reading } from './line-parser';
import { LineSplitter } from './line-splitter';
import { publishesPerKey, type SerialPortOptions } from './options';
import type { PortHandle, PortOpener } from './port-handle';
import { compileTemplate, renderTopic, type CompiledTemplate } from './topics';

/** A native open() that neither succeeds nor fails in this time is abandoned and retried. */
export const OPEN_TIMEOUT_MS = 5000;
/** Drop and error logs: the first one, then at most one per minute per reason (with a count). */
const LOG_INTERVAL_MS = 60_000;

export type PortState = 'online' | 'offline';

/** The status published retained on the status topic (JSON) and returned to metrics. */
export interface PortStatus {
  readonly name: string;
  readonly path: string;
  readonly state: PortState;
  /** ms since epoch of the last online/offline change (or of start). */
  readonly since: number;
  /** Lines received, including the dropped ones (blank lines are not counted). */
  readonly linesRead: number;
  readonly linesDropped: Readonly<Record<DropReason, number>>;
  readonly messagesPublished: number;
  /** open() calls, successful or not, since start. */
  readonly openAttempts: number;
  /** Times the port came back after being lost or missing. */
  readonly reconnects: number;
  readonly writes: { readonly sent: number; readonly queued: number; readonly dropped: number; readonly failed: number };
  readonly discovery: { readonly published: number; readonly skipped: number };
  readonly lastError: string | null;
  readonly lastErrorAt: number | null;
}

/**
 * The bridge's phase: one union, changed only in `setPhase` (DESIGN.md convention 2).
 * idle → opening → online | waiting; online → waiting (lost); waiting → opening; any → stopping → stopped.
 */
type Phase = 'idle' | 'opening' | 'online' | 'waiting' | 'stopping' | 'stopped';

export interface BridgeDeps {
  readonly opener: PortOpener;
  readonly gatewayId: string;
  readonly version: string;
  readonly random: () => number;
  readonly now: () => number;
  /** OPEN_TIMEOUT_MS in production; tests shorten it. */
  readonly openTimeoutMs: number;
  /**
   * The write and status topics of every configured port, this one's included: a reading that
   * lands on one of them (a device printing `cmd=LED=1` where a write topic is sensors/a/cmd)
   * would loop back, command another device or forge a status, so it is dropped.
   */
  readonly reservedTopics: ReadonlySet<string>;
}

function errorCode(err: unknown): string {
  if (err !== null && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    const message = (err as { message?: unknown }).message;
    // bindings-cpp reports open failures as "Error: ENOENT: no such file or directory, cannot open …".
    if (typeof message === 'string') {
      const match = /\b(E[A-Z]{2,})\b/.exec(message);
      if (match?.[1] !== undefined) return match[1];
    }
  }
  return 'EUNKNOWN';
}

const noop = (): void => {};

export class PortBridge {
  private phase: Phase = 'idle';
  /** Bumped whenever the current port object is abandoned; callbacks of older ports are ignored. */
  private generation = 0;
  private port: PortHandle | null = null;
  /** Removes this bridge's listeners from the current port object. */
  private detach: () => void = noop;
  private openTimer: NodeJS.Timeout | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private statusTimer: NodeJS.Timeout | undefined;
  private firstSettled: (() => void) | undefined;
  private firstAttempt: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;

  private readonly splitter: LineSplitter;
  private readonly parseOptions: ParseOptions;
  private readonly template: CompiledTemplate;
  private readonly statusTopic: string;
  private readonly writeTopic: string | undefined;
  private readonly delimiter: Buffer;
  private unsubscribeWrite: (() => void) | undefined;
  private readonly writeQueue: BoundedQueue<Buffer>;
  private writing = false;
  private readonly discovered = new Set<string>();
  private arrivalTs = 0;

  // ---- outage bookkeeping: log once per outage (and once more per new kind of error) ----
  private attemptsThisOutage = 0;
  private outageStartedAt = 0;
  private readonly loggedCodes = new Set<string>();
  private everOnline = false;

  // ---- status ----
  private since = 0;
  private linesRead = 0;
  private readonly linesDropped: Record<DropReason, number>;
  private messagesPublished = 0;
  private openAttempts = 0;
  private reconnects = 0;
  private writesSent = 0;
  private writesDropped = 0;
  private writesFailed = 0;
  private discoveryPublished = 0;
  private discoverySkipped = 0;
  private lastError: string | null = null;
  private lastErrorAt: number | null = null;
  private lastStatusJson = '';

  private readonly dropLogs = new Map<string, RateLimitedLog>();

  constructor(
    private readonly ctx: GatewayContext,
    readonly options: SerialPortOptions,
    private readonly deps: BridgeDeps,
  ) {
    this.linesDropped = Object.fromEntries(DROP_REASONS.map((r) => [r, 0])) as Record<DropReason, number>;
    this.splitter = new LineSplitter(
      options.delimiter,
      options.maxLineLength,
      (line) => this.onLine(line),
      () => {
        this.linesRead++;
        this.drop('tooLong', `line longer than maxLineLength (${options.maxLineLength} bytes)`);
      },
    );
    this.parseOptions = {
      format: options.format,
      wholeLine: !publishesPerKey(options.format, options.wholeLine),
      columns: options.columns,
      separator: options.separator,
      maxKeys: options.maxKeys,
    };
    this.template = compileTemplate(options.topic, options.name);
    this.statusTopic = compileTemplate(options.statusTopic, options.name).prefix;
    this.writeTopic = options.write === undefined ? undefined : compileTemplate(options.write, options.name).prefix;
    this.delimiter = Buffer.from(options.delimiter, 'utf8');
    this.writeQueue = new BoundedQueue(options.maxWriteQueue);
  }

  get name(): string {
    return this.options.name;
  }

  /**
   * Subscribes the write topic and makes the first open attempt. Resolves when that attempt has
   * succeeded or failed (bounded by OPEN_TIMEOUT_MS); a missing port is not an error — it is
   * retried in the background. Idempotent.
   */
  start(): Promise<void> {
    if (this.phase !== 'idle') return this.firstAttempt ?? Promise.resolve();
    this.since = this.deps.now();
    this.outageStartedAt = this.since;
    if (this.writeTopic !== undefined) this.unsubscribeWrite = this.ctx.subscribe(this.writeTopic, (m) => this.onCommand(m));
    if (this.options.statusInterval > 0) {
      this.statusTimer = setInterval(() => this.publishStatus(false), this.options.statusInterval * 1000);
      this.statusTimer.unref();
    }
    this.firstAttempt = new Promise<void>((resolve) => (this.firstSettled = resolve));
    this.attemptOpen();
    return this.firstAttempt;
  }

  /** Closes the port and every timer, publishes `offline`. Idempotent; bounded by `timeoutMs`. */
  stop(timeoutMs = 2000): Promise<void> {
    if (this.phase === 'stopped') return Promise.resolve();
    if (this.phase === 'idle') {
      this.phase = 'stopped'; // never started: nothing to close, no status to retract
      return Promise.resolve();
    }
    this.stopping ??= this.doStop(timeoutMs);
    return this.stopping;
  }

  private async doStop(timeoutMs: number): Promise<void> {
    this.setPhase('stopping');
    clearTimeout(this.openTimer);
    clearTimeout(this.retryTimer);
    clearInterval(this.statusTimer);
    this.unsubscribeWrite?.();
    this.unsubscribeWrite = undefined;
    this.generation++;
    const port = this.port;
    this.port = null;
    this.detach();
    this.detach = noop;
    this.writing = false;
    this.writeQueue.clear();
    this.settleFirst();
    if (port !== null) await closePort(port, timeoutMs);
    this.setPhase('stopped');
    this.publishStatus(true);
  }

  status(): PortStatus {
    return {
      name: this.options.name,
      path: this.options.path,
      state: this.phase === 'online' ? 'online' : 'offline',
      since: this.since,
      linesRead: this.linesRead,
      linesDropped: { ...this.linesDropped },
      messagesPublished: this.messagesPublished,
      openAttempts: this.openAttempts,
      reconnects: this.reconnects,
      writes: { sent: this.writesSent, queued: this.writeQueue.length, dropped: this.writesDropped, failed: this.writesFailed },
      discovery: { published: this.discoveryPublished, skipped: this.discoverySkipped },
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt,
    };
  }

  // ---- state ----

  private setPhase(next: Phase): void {
    const wasOnline = this.phase === 'online';
    this.phase = next;
    if (wasOnline !== (next === 'online')) this.since = this.deps.now();
  }

  private settleFirst(): void {
    const settle = this.firstSettled;
    this.firstSettled = undefined;
    settle?.();
  }

  /** Publishes the retained status; `force` even when nothing changed since the last one. */
  private publishStatus(force: boolean): void {
    const json = JSON.stringify(this.status());
    if (!force && json === this.lastStatusJson) return;
    this.lastStatusJson = json;
    this.publish(this.statusTopic, Buffer.from(json), 1, true);
  }

  private publish(topic: string, payload: Buffer, qos: 0 | 1 | 2, retain: boolean, properties?: PublishProperties): boolean {
    try {
      this.ctx.publish(properties === undefined ? { topic, payload, qos, retain } : { topic, payload, qos, retain, properties }, `serial:${this.name}`);
      return true;
    } catch (err) {
      this.rateLimited('publish', 'warn', 'publish refused by the broker', { topic, error: errorMessage(err) });
      return false;
    }
  }

  // ---- open, lose, retry ----

  private attemptOpen(): void {
    this.retryTimer = undefined;
    if (this.phase === 'stopping' || this.phase === 'stopped') return;
    this.setPhase('opening');
    const gen = ++this.generation;
    this.openAttempts++;
    let port: PortHandle;
    try {
      port = this.deps.opener(this.options);
    } catch (err) {
      this.openFailed(gen, err);
      return;
    }
    this.port = port;
    const onData = (chunk: Buffer): void => {
      if (gen === this.generation) this.onData(chunk);
    };
    const onError = (err: Error): void => {
      if (gen === this.generation) this.onPortError(err);
    };
    const onClose = (err?: Error | null): void => {
      if (gen === this.generation) this.lost(err ?? new Error('port closed'));
    };
    port.on('data', onData);
    port.on('error', onError);
    port.on('close', onClose);
    this.detach = () => {
      port.removeListener('data', onData);
      port.removeListener('close', onClose);
      // Swapped, not removed: an 'error' without a listener would crash the process.
      port.on('error', noop);
      port.removeListener('error', onError);
    };
    const timeout = this.deps.openTimeoutMs;
    this.openTimer = setTimeout(() => this.openFailed(gen, Object.assign(new Error(`open timed out after ${timeout} ms`), { code: 'ETIMEDOUT' })), timeout);
    port.open((err) => {
      if (gen !== this.generation) {
        // Opened after it was abandoned (timeout, stop): close it so the device is not held.
        if (err === null) port.close(noop);
        return;
      }
      clearTimeout(this.openTimer);
      if (err !== null) this.openFailed(gen, err);
      else this.opened();
    });
  }

  private opened(): void {
    this.setPhase('online');
    this.splitter.reset();
    const attempts = this.attemptsThisOutage;
    const outageMs = this.deps.now() - this.outageStartedAt;
    if (this.everOnline) {
      this.reconnects++;
      this.ctx.logger.info('serial port online again', { port: this.name, path: this.options.path, retries: attempts, outageMs });
    } else if (attempts > 0) {
      this.ctx.logger.info('serial port online', { port: this.name, path: this.options.path, baudRate: this.options.baudRate, retries: attempts, waitedMs: outageMs });
    } else {
      this.ctx.logger.info('serial port online', { port: this.name, path: this.options.path, baudRate: this.options.baudRate });
    }
    this.everOnline = true;
    this.attemptsThisOutage = 0;
    this.loggedCodes.clear();
    this.publishStatus(true);
    this.settleFirst();
    this.pumpWrites();
  }

  private openFailed(gen: number, err: unknown): void {
    if (gen !== this.generation || this.phase === 'stopping' || this.phase === 'stopped') return;
    clearTimeout(this.openTimer);
    this.abandonPort();
    this.recordError(err);
    const code = errorCode(err);
    const fields = { port: this.name, path: this.options.path, error: errorMessage(err), code };
    if (!this.loggedCodes.has(code)) {
      // Once per outage and kind of error (ENOENT → EACCES is worth a line), never per attempt.
      this.loggedCodes.add(code);
      this.ctx.logger.warn(this.everOnline ? 'serial port still unavailable; retrying with back-off' : 'cannot open serial port; retrying with back-off', fields);
    } else {
      this.ctx.logger.debug('serial port open failed', { ...fields, attempt: this.attemptsThisOutage });
    }
    const firstFailure = this.phase === 'opening' && this.firstSettled !== undefined;
    this.setPhase('waiting');
    if (firstFailure) this.publishStatus(true); // the first `offline`, so availability is known from the start
    this.scheduleRetry();
    this.settleFirst();
  }

  /** The open port went away: unplugged (EIO, bad file descriptor), closed by the driver. */
  private lost(err: Error): void {
    if (this.phase === 'stopping' || this.phase === 'stopped') return;
    clearTimeout(this.openTimer);
    this.abandonPort();
    this.recordError(err);
    this.outageStartedAt = this.deps.now();
    this.attemptsThisOutage = 0;
    this.loggedCodes.clear();
    this.loggedCodes.add(errorCode(err));
    // The device path vanishing is the expected next failure after an unplug; not worth a second line.
    this.loggedCodes.add('ENOENT');
    this.ctx.logger.warn('serial port lost; reopening with back-off', { port: this.name, path: this.options.path, error: errorMessage(err) });
    this.setPhase('waiting');
    this.publishStatus(true);
    this.scheduleRetry();
  }

  private scheduleRetry(): void {
    const { initialDelay, maxDelay } = this.options.reconnect;
    const delay = backoffDelay(this.attemptsThisOutage, initialDelay, maxDelay, this.deps.random);
    this.attemptsThisOutage++;
    this.retryTimer = setTimeout(() => this.attemptOpen(), delay);
  }

  /** Detaches from the current port object and closes it if it is open. */
  private abandonPort(): void {
    this.generation++;
    const port = this.port;
    this.port = null;
    this.detach();
    this.detach = noop;
    if (this.writing) {
      this.writing = false;
      this.writesFailed++; // the write in flight when the port went away
    }
    if (port !== null) void closePort(port, 1000);
  }

  private recordError(err: unknown): void {
    this.lastError = errorMessage(err);
    this.lastErrorAt = this.deps.now();
  }

  private onPortError(err: Error): void {
    this.recordError(err);
    this.rateLimited('port-error', 'warn', 'serial port error', { port: this.name, error: err.message });
  }

  // ---- reading ----

  private onData(chunk: Buffer): void {
    // One clock read per chunk: every line completed by this chunk arrived now. Taken before any
    // processing so buffered lines keep the time they were read, not the time they were published.
    this.arrivalTs = this.deps.now();
    this.splitter.push(chunk);
  }

  private onLine(line: Buffer): void {
    if (line.length === 0) return;
    this.linesRead++;
    if (hasBinary(line)) return this.drop('binary', 'control characters in line');
    if (!isUtf8(line)) return this.drop('invalidUtf8', 'line is not valid UTF-8');
    const text = line.toString('utf8');
    if (text.trim() === '') {
      this.linesRead--; // whitespace only: a blank line, not a reading
      return;
    }
    const result = parseLine(text, this.parseOptions);
    if (!result.ok) return this.drop(result.reason, result.detail);
    const readings = result.readings;
    const topics: string[] = [];
    for (const reading of readings) {
      const topic = renderTopic(this.template, reading.key);
      if (this.deps.reservedTopics.has(topic)) return this.drop('invalidTopic', `key maps to a reserved topic: ${topic}`);
      // Checked for the whole line before anything is published (e.g. nested keys deeper than
      // limits.maxTopicLevels), so a line is published entirely or not at all.
      const invalid = this.ctx.topicError(topic);
      if (invalid !== null) return this.drop('invalidTopic', `${topic}: ${invalid}`);
      topics.push(topic);
    }
    const { qos, retain, wrap } = this.options;
    // One properties object per line: its readings share the port and the arrival time.
    const properties = this.options.userProperties ? { userProperties: { port: this.name, arrivedAt: String(this.arrivalTs) } } : undefined;
    for (let i = 0; i < readings.length; i++) {
      const reading = readings[i] as Reading;
      const topic = topics[i] as string;
      // Discovery before the first reading, so Home Assistant is subscribed when it arrives; the
      // topic was checked above, so the reading that follows will be published.
      if (this.options.homeAssistant !== undefined && !this.discovered.has(reading.key)) this.discover(reading, topic);
      const payload = wrap ? `{"value":${reading.json},"ts":${this.arrivalTs}}` : reading.text;
      if (this.publish(topic, Buffer.from(payload, 'utf8'), qos, retain, properties)) this.messagesPublished++;
    }
  }

  private discover(reading: Reading, stateTopic: string): void {
    const ha = this.options.homeAssistant;
    if (ha === undefined) return;
    if (this.discovered.size >= ha.maxKeys) {
      if (this.discoverySkipped++ === 0) {
        this.ctx.logger.warn('homeAssistant.maxKeys reached; further keys are not announced', { port: this.name, maxKeys: ha.maxKeys });
      }
      return;
    }
    this.discovered.add(reading.key);
    const msg = discoveryMessage({
      gatewayId: this.deps.gatewayId,
      portName: this.name,
      key: reading.key,
      stateTopic,
      statusTopic: this.statusTopic,
      qos: this.options.qos,
      wrap: this.options.wrap,
      sampleJson: reading.json,
      version: this.deps.version,
      options: ha,
    });
    if (this.publish(msg.topic, Buffer.from(msg.payload), 1, true)) this.discoveryPublished++;
  }

  private drop(reason: DropReason, detail: string): void {
    this.linesDropped[reason]++;
    this.rateLimited(`drop:${reason}`, 'warn', 'serial line dropped', { port: this.name, reason, detail, count: this.linesDropped[reason] });
  }

  private rateLimited(key: string, level: 'warn' | 'info', msg: string, fields: LogFields): void {
    let log = this.dropLogs.get(key);
    if (log === undefined) {
      log = new RateLimitedLog((m, f) => this.ctx.logger[level](m, f), LOG_INTERVAL_MS);
      this.dropLogs.set(key, log);
    }
    log.emit(msg, fields, this.deps.now());
  }

  // ---- writing ----

  private onCommand(msg: Message): void {
    // An empty payload is how a client clears a retained message; it is not a command.
    if (msg.payload.length === 0) return;
    if (msg.payload.length > this.options.maxLineLength) {
      this.writesDropped++;
      this.rateLimited('write-too-long', 'warn', 'command longer than maxLineLength dropped', { port: this.name, bytes: msg.payload.length });
      return;
    }
    const data = Buffer.concat([msg.payload, this.delimiter]);
    if (this.phase === 'online' && !this.writing && this.writeQueue.length === 0) {
      this.writeNow(data);
      return;
    }
    if (this.writeQueue.push(data) !== undefined) {
      this.writesDropped++;
      this.rateLimited('write-queue-full', 'warn', 'write queue full (port offline or slow); oldest command dropped', {
        port: this.name,
        maxWriteQueue: this.options.maxWriteQueue,
        dropped: this.writesDropped,
      });
    }
  }

  private pumpWrites(): void {
    if (this.phase !== 'online' || this.writing) return;
    const next = this.writeQueue.shift();
    if (next !== undefined) this.writeNow(next);
  }

  /** One write in flight at a time: a device that stops reading fills the bounded queue, not memory. */
  private writeNow(data: Buffer): void {
    const port = this.port;
    if (port === null) return;
    const gen = this.generation;
    this.writing = true;
    port.write(data, (err) => {
      if (gen !== this.generation) return;
      this.writing = false;
      if (err) {
        this.writesFailed++;
        this.recordError(err);
        this.rateLimited('write-failed', 'warn', 'write to serial port failed', { port: this.name, error: err.message });
      } else {
        this.writesSent++;
      }
      this.pumpWrites();
    });
  }
}

/** Closes a port already detached from the bridge; resolves after the close or after `timeoutMs`. */
function closePort(port: PortHandle, timeoutMs: number): Promise<void> {
  if (!port.isOpen) return Promise.resolve();
  return new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    port.close(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
