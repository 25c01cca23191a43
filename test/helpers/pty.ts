/**
 * Real pseudo-terminal pairs from `socat` for the serial bridge tests (DESIGN.md "Tests"): the
 * gateway opens one end (`gatewayPath`), the test plays the device on the other (`devicePath`).
 * socat is a child process killed by its PID (never by name); stopping it makes the device
 * disappear exactly like an unplugged USB adapter: the open end gets a hangup and both links vanish.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { SerialPort } from 'serialport';
import type { Test } from 'tap';
import { waitFor } from './broker';

export class PtyPair {
  private child: ChildProcess | null = null;
  private exited: Promise<void> = Promise.resolve();

  /** Link names are inside `dir` (a fs.mkdtempSync directory owned by the test). */
  constructor(
    readonly dir: string,
    readonly name: string,
  ) {}

  get gatewayPath(): string {
    return join(this.dir, `${this.name}-gw`);
  }

  get devicePath(): string {
    return join(this.dir, `${this.name}-dev`);
  }

  get running(): boolean {
    return this.child !== null;
  }

  /**
   * Starts socat and resolves once both links exist. With `beforeGatewayAppears`, the gateway's
   * link is created under a temporary name and renamed into place only after the callback (which
   * typically opens the device end) has finished — so a gateway polling for its path cannot open
   * it and write before the device end is there to receive (opening a pty flushes its input).
   */
  async start(timeoutMs = 5000, beforeGatewayAppears?: () => Promise<void>): Promise<void> {
    if (this.child !== null) throw new Error('socat already running');
    const gatewayLink = beforeGatewayAppears === undefined ? this.gatewayPath : `${this.gatewayPath}.pending`;
    const child = spawn('socat', [`pty,raw,echo=0,link=${gatewayLink}`, `pty,raw,echo=0,link=${this.devicePath}`], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    this.child = child;
    this.exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.once('exit', () => {
      if (this.child === child) this.child = null;
    });
    try {
      await waitFor(() => existsSync(gatewayLink) && existsSync(this.devicePath), timeoutMs, `socat links in ${this.dir}`);
    } catch (err) {
      await this.stop();
      throw new Error(`${(err as Error).message}; socat stderr: ${stderr}`);
    }
    if (beforeGatewayAppears !== undefined) {
      await beforeGatewayAppears();
      renameSync(gatewayLink, this.gatewayPath);
    }
  }

  /**
   * Stops socat (SIGTERM, so it removes its links as a vanishing /dev/serial/by-id path does) and
   * resolves when it has exited and the links are gone. SIGKILL after `timeoutMs`.
   */
  async stop(timeoutMs = 3000): Promise<void> {
    const child = this.child;
    if (child === null || child.pid === undefined) return;
    const pid = child.pid;
    try {
      process.kill(pid, 'SIGTERM');
    } catch {
      // already gone
    }
    const timer = setTimeout(() => {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }, timeoutMs);
    await this.exited;
    clearTimeout(timer);
    this.child = null;
    // socat removes the link it created; a link renamed into place is removed here, so the path
    // vanishes as an unplugged device's does.
    rmSync(this.gatewayPath, { force: true });
  }
}

/**
 * The device side of a pty: what a sensor would write, and what it receives from the gateway.
 * Uses the real serialport binding, so writes are non-blocking and honour pty flow control.
 */
export class Device {
  received = Buffer.alloc(0);
  closed = false;

  private constructor(private readonly port: SerialPort) {
    port.on('data', (chunk: Buffer) => {
      this.received = Buffer.concat([this.received, chunk]);
    });
    port.on('close', () => (this.closed = true));
    port.on('error', () => {});
  }

  static open(path: string): Promise<Device> {
    return new Promise((resolve, reject) => {
      const port = new SerialPort({ path, baudRate: 115200, autoOpen: false });
      port.open((err) => (err ? reject(err) : resolve(new Device(port))));
    });
  }

  /** Writes and waits until the bytes are handed to the pty (drain). */
  write(data: string | Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.port.write(data, (err) => {
        if (err) reject(err);
      });
      this.port.drain((err) => (err ? reject(err) : resolve()));
    });
  }

  async waitForReceived(text: string, timeoutMs = 5000): Promise<void> {
    await waitFor(() => this.received.includes(text), timeoutMs, `device to receive ${JSON.stringify(text)}`);
  }

  close(): Promise<void> {
    if (this.closed || !this.port.isOpen) return Promise.resolve();
    return new Promise((resolve) => this.port.close(() => resolve()));
  }
}

/**
 * Starts a pty pair in `dir` and opens its device end; both are closed when `t` ends. A test that
 * replugs assigns its new device to the returned object's `device`, which the teardown closes.
 */
export async function plugIn(t: Test, dir: string, name: string): Promise<{ readonly pty: PtyPair; device: Device }> {
  const pty = new PtyPair(dir, name);
  let plugged: { readonly pty: PtyPair; device: Device } | undefined;
  t.teardown(async () => {
    await plugged?.device.close();
    await pty.stop();
  });
  await pty.start();
  plugged = { pty, device: await Device.open(pty.devicePath) };
  return plugged;
}
