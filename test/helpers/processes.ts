/**
 * Child processes for tests (the edgeway CLI, mosquitto_sub): output captured, a hard time limit,
 * killed by PID in the test's teardown.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import net, { type AddressInfo } from 'node:net';

/**
 * Where a started process registers its clean-up: a tap `Test` in tests, scripts/lib/cleanup.ts's
 * `Cleanup` in the chaos and soak scripts (which run outside tap).
 */
export interface Teardowns {
  teardown(fn: () => unknown): void;
}

export interface Running {
  readonly child: ChildProcess;
  stdout: string;
  stderr: string;
  /** Resolves with the exit code (or the signal) once the process ended and its pipes drained. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function killByPid(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return;
  try {
    process.kill(child.pid, signal);
  } catch {
    // exited meanwhile
  }
}

export interface StartOptions {
  /** Where a gateway started without storage.path creates its ./data folder. */
  readonly cwd?: string;
  /** Added to (overriding) this process's environment. */
  readonly env?: Record<string, string>;
  /** The child's stdout goes to this open file descriptor instead of `running.stdout`. */
  readonly stdoutFd?: number;
}

/** Starts a command; SIGKILLed after `timeoutMs` or when `t` ends. */
export function startProcess(t: Teardowns, command: string, args: string[], timeoutMs: number, { cwd, env, stdoutFd }: StartOptions = {}): Running {
  const child = spawn(command, args, {
    stdio: ['ignore', stdoutFd ?? 'pipe', 'pipe'],
    ...(cwd === undefined ? {} : { cwd }),
    ...(env === undefined ? {} : { env: { ...process.env, ...env } }),
  });
  const timer = setTimeout(() => killByPid(child, 'SIGKILL'), timeoutMs);
  const running: Running = {
    child,
    stdout: '',
    stderr: '',
    exited: new Promise((resolve) => {
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({ code, signal });
      });
    }),
  };
  child.stdout?.setEncoding('utf8').on('data', (s: string) => (running.stdout += s));
  child.stderr?.setEncoding('utf8').on('data', (s: string) => (running.stderr += s));
  t.teardown(async () => {
    killByPid(child, 'SIGKILL');
    await running.exited;
  });
  return running;
}

/** Waits until `get()` matches `re`, or fails after `timeoutMs` with the output so far. */
export async function waitForOutput(get: () => string, re: RegExp, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(get())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; output so far:\n${get()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** A port that was free a moment ago (bind to port 0, read it, close). */
export async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen({ host: '127.0.0.1', port: 0 }, resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}
