/**
 * A real `redis-server` for tests, on a free loopback port, with its data in a temp folder: it can
 * be stopped, killed, restarted on the same port (with its data when `appendonly` is on) and
 * paused with SIGSTOP, so that tests exercise real outages. Only the PID it started is signalled.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Redis from 'ioredis';
import { freePort, startProcess, type Running, type Teardowns } from './processes';

export interface RedisServerOptions {
  /** Keep the data across restarts (AOF with fsync always); default true. */
  readonly appendonly?: boolean;
  /** `requirepass`: clients must authenticate. */
  readonly password?: string;
  /** Extra `redis-server` arguments, e.g. TLS ones. */
  readonly args?: readonly string[];
  /** The port to listen on (e.g. one a gateway was already configured with); default a free one. */
  readonly port?: number;
  /** Each run of the server is SIGKILLed after this long (ms); default 10 minutes (a soak run needs longer). */
  readonly lifetimeMs?: number;
}

export class RedisServer {
  private running: Running | undefined;
  private readonly clients: Redis[] = [];

  private constructor(
    private readonly t: Teardowns,
    readonly port: number,
    readonly dir: string,
    private readonly options: RedisServerOptions,
  ) {}

  /** Starts a fresh server; stopped, and its folder removed, when `t` ends. */
  static async start(t: Teardowns, options: RedisServerOptions = {}): Promise<RedisServer> {
    const dir = mkdtempSync(join(tmpdir(), 'edgeway-redis-'));
    const server = new RedisServer(t, options.port ?? (await freePort()), dir, options);
    t.teardown(async () => {
      for (const c of server.clients) c.disconnect();
      await server.kill();
      rmSync(dir, { recursive: true, force: true });
    });
    await server.restart();
    return server;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.running?.child.pid;
  }

  /** Starts the server again on the same port and folder (after stop or kill). */
  async restart(): Promise<void> {
    if (this.running !== undefined) throw new Error('redis-server is already running');
    const args = [
      '--port', String(this.port),
      '--bind', '127.0.0.1',
      '--dir', this.dir,
      '--save', '',
      '--appendonly', this.options.appendonly === false ? 'no' : 'yes',
      '--appendfsync', 'always',
      '--daemonize', 'no',
      '--loglevel', 'warning',
      ...(this.options.password === undefined ? [] : ['--requirepass', this.options.password]),
      ...(this.options.args ?? []),
    ];
    const running = startProcess(this.t, 'redis-server', args, this.options.lifetimeMs ?? 600_000, { cwd: this.dir });
    this.running = running;
    // Ready once it answers PING (the AOF loaded).
    const probe = new Redis({ port: this.port, host: '127.0.0.1', lazyConnect: true, retryStrategy: () => 50, maxRetriesPerRequest: null, ...(this.options.password === undefined ? {} : { password: this.options.password }) });
    probe.on('error', () => undefined); // refused until the server listens: expected here
    try {
      const deadline = Date.now() + 10_000;
      for (;;) {
        try {
          await probe.connect();
          await probe.ping();
          break;
        } catch (err) {
          if (Date.now() > deadline || running.child.exitCode !== null) {
            throw new Error(`redis-server did not start (${String(err)}); output:\n${running.stdout}${running.stderr}`);
          }
          probe.disconnect();
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    } finally {
      probe.disconnect();
    }
  }

  /** Graceful: SIGTERM (Redis writes its AOF and exits). */
  async stop(): Promise<void> {
    await this.signal('SIGTERM');
  }

  /** SIGKILL: like a crash. */
  async kill(): Promise<void> {
    await this.signal('SIGKILL');
  }

  /** SIGSTOP: connections stay open but nothing answers. */
  pause(): void {
    if (this.pid !== undefined) process.kill(this.pid, 'SIGSTOP');
  }

  resume(): void {
    if (this.pid !== undefined) process.kill(this.pid, 'SIGCONT');
  }

  /** A client for assertions (closed when the test ends). */
  client(): Redis {
    const c = new Redis({ port: this.port, host: '127.0.0.1', maxRetriesPerRequest: 3, ...(this.options.password === undefined ? {} : { password: this.options.password }) });
    c.on('error', () => undefined);
    this.clients.push(c);
    return c;
  }

  private async signal(signal: NodeJS.Signals): Promise<void> {
    const running = this.running;
    if (running === undefined) return;
    this.running = undefined;
    const pid = running.child.pid;
    if (pid !== undefined && running.child.exitCode === null && running.child.signalCode === null) {
      try {
        if (signal !== 'SIGKILL') process.kill(pid, 'SIGCONT'); // a paused server cannot handle SIGTERM
        process.kill(pid, signal);
      } catch {
        // already gone
      }
    }
    await running.exited;
  }
}
