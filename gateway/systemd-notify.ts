/**
 * Readiness, status and watchdog for systemd's `Type=notify` (sd_notify(3) protocol), issue 6.
 *
 * Node has no unix datagram sockets, so it cannot send to $NOTIFY_SOCKET itself. The unit's
 * wrapper (/usr/local/bin/edgeway) therefore starts the gateway through scripts/notify-exec.pl:
 * perl connects a datagram socket to $NOTIFY_SOCKET and exec()s node, which inherits the socket
 * as the descriptor named by $EDGEWAY_NOTIFY_FD. A write(2) on a connected datagram socket sends
 * one datagram, and the kernel stamps it with the credentials of the process that writes — the
 * gateway itself, the unit's main PID. Hence:
 *   - no race with systemd's cgroup lookup of the sender (before systemd 254 a message from a
 *     helper that exited before PID 1 read it was dropped: the reason `systemd-notify --ready` run
 *     as a child does not work on Debian 12 / Pi OS bookworm's systemd 252); the main PID is
 *     alive for as long as there is anything to notify, and systemd knows it without a lookup;
 *   - `NotifyAccess=main` suffices, no `all`; no relay process that could die, lag or need
 *     restarting, and no pipe hop per message.
 * The socket is non-blocking (set by notify-exec.pl), so a PID 1 that is slow to read costs a
 * dropped, counted message (EAGAIN), never a stalled event loop.
 *
 * Without $NOTIFY_SOCKET (not under systemd) nothing here does anything.
 */
import { fstatSync, writeSync } from 'node:fs';
import { errorMessage, RateLimitedLog, type Logger } from './broker';

/** What the gateway tells its service manager. Every method is cheap and never throws. */
export interface ServiceNotifier {
  /**
   * The gateway serves: listeners open, storage loaded. Sends READY=1 and starts the watchdog
   * pings; `status` is read again at every ping (or status refresh) and sent when it changed.
   */
  ready(status: () => string): void;
  /** SIGHUP received: RELOADING=1 (with MONOTONIC_USEC, which systemd ≥ 253 checks). */
  reloading(): void;
  /** The reload is over (applied or refused): READY=1 again. */
  reloaded(): void;
  /** Shutting down: STOPPING=1. Pings go on until the process exits (the stop is bounded). */
  stopping(): void;
  /** A line for `systemctl status` (e.g. why the start failed). */
  status(text: string): void;
}

/** For gateways not started by systemd: does nothing. */
export const noServiceNotifier: ServiceNotifier = {
  ready() {},
  reloading() {},
  reloaded() {},
  stopping() {},
  status() {},
};

/** The environment variable notify-exec.pl sets to the inherited socket's descriptor number. */
const NOTIFY_FD_VARIABLE = 'EDGEWAY_NOTIFY_FD';

/**
 * How often STATUS= is refreshed without a watchdog (ms). With one, it rides on the pings. The
 * status changes with clients and uplink state; once a minute is enough for `systemctl status`.
 */
const STATUS_REFRESH_MS = 60_000;

/** Longest STATUS= text sent (characters): `systemctl status` shows one line. */
const MAX_STATUS_LENGTH = 200;

/** setInterval's longest delay (ms). */
const MAX_TIMER_MS = 2 ** 31 - 1;

type NotifySettings =
  | { readonly mode: 'off' }
  /** Under systemd but without the descriptor (started as `node main.js`, not through the wrapper). */
  | { readonly mode: 'unusable'; readonly reason: string }
  | {
      readonly mode: 'on';
      readonly fd: number;
      /** WATCHDOG=1 every this many ms (half of WATCHDOG_USEC), or undefined without a watchdog. */
      readonly watchdogIntervalMs: number | undefined;
      /** Why a watchdog in the environment is not used (WATCHDOG_PID of another process, a bad value). */
      readonly watchdogIgnored?: string;
    };

/** Reads sd_notify's environment (and notify-exec.pl's descriptor). Pure: no I/O. */
export function notifySettings(env: NodeJS.ProcessEnv, pid: number): NotifySettings {
  const socket = env.NOTIFY_SOCKET;
  if (socket === undefined || socket === '') return { mode: 'off' };
  const fdText = env[NOTIFY_FD_VARIABLE];
  if (fdText === undefined || fdText === '') {
    return { mode: 'unusable', reason: `NOTIFY_SOCKET is set but ${NOTIFY_FD_VARIABLE} is not: start the gateway through /usr/local/bin/edgeway (which runs it through notify-exec.pl), not as "node main.js"` };
  }
  // 0–2 are stdio; anything else is not what notify-exec.pl hands over.
  if (!/^\d{1,9}$/.test(fdText) || Number(fdText) < 3) return { mode: 'unusable', reason: `${NOTIFY_FD_VARIABLE}=${JSON.stringify(fdText)} is not a descriptor number ≥ 3` };
  const fd = Number(fdText);

  const usecText = env.WATCHDOG_USEC;
  if (usecText === undefined || usecText === '') return { mode: 'on', fd, watchdogIntervalMs: undefined };
  // sd_watchdog_enabled(3): WATCHDOG_PID, when set, names the process the watchdog is meant for.
  const forPid = env.WATCHDOG_PID;
  if (forPid !== undefined && forPid !== '' && forPid !== String(pid)) {
    return { mode: 'on', fd, watchdogIntervalMs: undefined, watchdogIgnored: `WATCHDOG_PID=${forPid} is another process (this is ${pid})` };
  }
  if (!/^\d{1,15}$/.test(usecText) || Number(usecText) === 0) {
    return { mode: 'on', fd, watchdogIntervalMs: undefined, watchdogIgnored: `WATCHDOG_USEC=${JSON.stringify(usecText)} is not a positive number of microseconds` };
  }
  // Half the timeout, as sd_watchdog_enabled(3) advises: one late ping is not yet a restart. At
  // most setInterval's limit (about 24.8 days): Node would fire a longer one every millisecond.
  return { mode: 'on', fd, watchdogIntervalMs: Math.min(MAX_TIMER_MS, Math.max(1, Math.floor(Number(usecText) / 2000))) };
}

/** A STATUS= value: one line, bounded. */
export function statusValue(text: string): string {
  const line = text.replace(/[\r\n]+/g, ' ');
  return line.length <= MAX_STATUS_LENGTH ? line : `${line.slice(0, MAX_STATUS_LENGTH - 1)}…`;
}

/** CLOCK_MONOTONIC in µs: libuv's hrtime reads CLOCK_MONOTONIC, the clock systemd compares with. */
function monotonicUsec(): bigint {
  return process.hrtime.bigint() / 1000n;
}

/** Sends to systemd through the inherited, connected, non-blocking datagram socket. */
export class SystemdNotifier implements ServiceNotifier {
  /** starting → ready → stopping; a SIGHUP while stopping must not report READY=1 again. */
  private state: 'starting' | 'ready' | 'stopping' = 'starting';
  private failureCount = 0;
  private timer: NodeJS.Timeout | undefined;
  private statusOf: (() => string) | undefined;
  private lastStatus = '';
  private failing = false;
  private readonly failureLog: RateLimitedLog;

  constructor(
    private readonly fd: number,
    private readonly watchdogIntervalMs: number | undefined,
    private readonly logger: Logger,
  ) {
    this.failureLog = new RateLimitedLog((msg, fields) => logger.warn(msg, fields));
  }

  /** Messages the kernel refused (socket queue full, systemd gone); logged at most once a minute. */
  get failures(): number {
    return this.failureCount;
  }

  ready(status: () => string): void {
    if (this.state !== 'starting') return;
    this.state = 'ready';
    this.statusOf = status;
    this.lastStatus = statusValue(status());
    this.send(`READY=1\nSTATUS=${this.lastStatus}`);
    // From the event loop on purpose: a loop that stalls stops the pings, and systemd restarts us.
    // unref(): the pings never keep a stopping gateway alive.
    this.timer = setInterval(() => this.tick(), this.watchdogIntervalMs ?? STATUS_REFRESH_MS).unref();
  }

  reloading(): void {
    if (this.state !== 'ready') return;
    this.send(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}\nSTATUS=reloading the configuration`);
  }

  reloaded(): void {
    if (this.state !== 'ready' || this.statusOf === undefined) return;
    this.lastStatus = statusValue(this.statusOf());
    this.send(`READY=1\nSTATUS=${this.lastStatus}`);
  }

  stopping(): void {
    this.state = 'stopping';
    this.statusOf = undefined;
    this.lastStatus = 'stopping';
    this.send('STOPPING=1\nSTATUS=stopping');
  }

  status(text: string): void {
    this.lastStatus = statusValue(text);
    this.send(`STATUS=${this.lastStatus}`);
  }

  private tick(): void {
    const lines: string[] = [];
    if (this.watchdogIntervalMs !== undefined) lines.push('WATCHDOG=1');
    if (this.statusOf !== undefined) {
      const status = statusValue(this.statusOf());
      if (status !== this.lastStatus) {
        this.lastStatus = status;
        lines.push(`STATUS=${status}`);
      }
    }
    if (lines.length > 0) this.send(lines.join('\n'));
  }

  /** One datagram; a refusal is counted and logged (rate-limited), never thrown. */
  private send(message: string): void {
    try {
      writeSync(this.fd, message);
      if (this.failing) {
        this.failing = false;
        this.logger.info('systemd notifications delivered again', { failures: this.failureCount });
      }
    } catch (err) {
      this.failureCount++;
      this.failing = true;
      // EAGAIN: systemd's queue is full (it is busy), the message is dropped; ECONNREFUSED: the
      // socket it listened on is gone (systemd is not running any more), all later ones are too.
      this.failureLog.emit('systemd notification not delivered', {
        message: message.split('\n', 1)[0],
        error: (err as NodeJS.ErrnoException).code ?? errorMessage(err),
        failures: this.failureCount,
      });
    }
  }
}

/**
 * The notifier for this process: a SystemdNotifier when started by systemd through
 * notify-exec.pl, else one that does nothing (with a warning when systemd expects readiness but the
 * descriptor is missing or unusable). Removes the variables from `env` (as sd_notify's
 * unset_environment does) so that no child process of the gateway inherits them.
 */
export function connectServiceNotifier(env: NodeJS.ProcessEnv, logger: Logger): ServiceNotifier {
  const settings = notifySettings(env, process.pid);
  for (const name of ['NOTIFY_SOCKET', NOTIFY_FD_VARIABLE, 'WATCHDOG_USEC', 'WATCHDOG_PID']) delete env[name];
  if (settings.mode === 'off') return noServiceNotifier;
  if (settings.mode === 'unusable') {
    logger.warn('systemd: readiness is not reported (a Type=notify unit will time out)', { reason: settings.reason });
    return noServiceNotifier;
  }
  let problem: string | undefined;
  try {
    if (!fstatSync(settings.fd).isSocket()) problem = 'is not a socket';
  } catch (err) {
    problem = `is not open (${(err as NodeJS.ErrnoException).code ?? errorMessage(err)})`;
  }
  if (problem !== undefined) {
    logger.warn('systemd: readiness is not reported (a Type=notify unit will time out)', { reason: `${NOTIFY_FD_VARIABLE}=${settings.fd} ${problem}` });
    return noServiceNotifier;
  }
  if (settings.watchdogIgnored !== undefined) logger.warn('systemd: watchdog not used', { reason: settings.watchdogIgnored });
  logger.info('systemd: readiness, status and watchdog notifications on', {
    fd: settings.fd,
    watchdogIntervalMs: settings.watchdogIntervalMs ?? 'off',
  });
  return new SystemdNotifier(settings.fd, settings.watchdogIntervalMs, logger);
}
