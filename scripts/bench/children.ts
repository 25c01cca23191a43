/**
 * Child-process bookkeeping: every process the harness starts goes through
 * spawnTracked(), and is killed by PID on exit, error or SIGINT/SIGTERM so
 * no broker or load generator outlives a benchmark run.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import os from 'node:os';

const live = new Map<number, ChildProcess>();

export interface SpawnOptions {
  /** CPU to pin to with taskset, or null for unpinned. */
  cpu: number | null;
  /** Soft RLIMIT_NOFILE to set in the child (1000 idle sockets need more than some defaults). */
  nofile: number;
  /** Extra environment variables. */
  env?: Record<string, string>;
  /** Working directory (default: this process's). */
  cwd?: string;
}

/**
 * Spawn argv as `sh -c 'ulimit -Sn N; exec taskset -c CPU argv...'`. Both sh
 * and taskset exec() in place, so child.pid is the PID of the real program,
 * which is what /proc sampling and kill-by-PID need.
 */
export function spawnTracked(argv: string[], opts: SpawnOptions): ChildProcess {
  const pin = opts.cpu === null ? [] : ['taskset', '-c', String(opts.cpu)];
  const child = spawn(
    '/bin/sh',
    ['-c', 'ulimit -Sn "$1" 2>/dev/null || true; shift; exec "$@"', 'sh', String(opts.nofile), ...pin, ...argv],
    { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opts.env }, ...(opts.cwd === undefined ? {} : { cwd: opts.cwd }) },
  );
  if (child.pid === undefined) throw new Error(`failed to spawn ${argv[0] ?? '?'}`);
  const pid = child.pid;
  live.set(pid, child);
  child.once('exit', () => live.delete(pid));
  return child;
}

/** Resolve with the exit code (or signal name) once the child has exited. */
export function waitExit(child: ChildProcess, timeoutMs: number): Promise<number | string | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode ?? child.signalCode);
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(null), timeoutMs);
    child.once('exit', (code, signal) => {
      clearTimeout(t);
      resolve(code ?? signal);
    });
  });
}

/** SIGTERM, then SIGKILL after graceMs. Always by PID of a process we spawned. */
export async function stopChild(child: ChildProcess, graceMs = 3000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null || child.pid === undefined) return;
  try {
    process.kill(child.pid, 'SIGTERM');
  } catch {
    return; // exited between the check and the kill
  }
  if ((await waitExit(child, graceMs)) === null) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      // already gone
    }
    await waitExit(child, graceMs);
  }
}

export function killAllSync(): void {
  for (const pid of live.keys()) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // already exited
    }
  }
  live.clear();
}

/** Kill tracked children whenever the harness goes away, however it goes away. */
export function installCleanup(onExit?: () => void): void {
  process.on('exit', () => {
    killAllSync();
    onExit?.();
  });
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}, killing ${live.size} child process(es)\n`);
      process.exit(130);
    });
  }
}

/** Keep the last `max` characters of a stream, for error messages. */
export function captureTail(stream: NodeJS.ReadableStream | null, max = 8192): () => string {
  let tail = '';
  stream?.setEncoding('utf8');
  stream?.on('data', (s: string) => {
    tail = (tail + s).slice(-max);
  });
  return () => tail;
}

export interface Pinning {
  enabled: boolean;
  brokerCpu: number | null;
  loadCpu: number | null;
  warning?: string;
}

/** Broker on CPU 0, load on CPU 1 — if taskset exists and both CPUs are usable. */
export function detectPinning(wanted: boolean): Pinning {
  const off = (warning?: string): Pinning => ({ enabled: false, brokerCpu: null, loadCpu: null, ...(warning ? { warning } : {}) });
  if (!wanted) return off('CPU pinning disabled by --no-pin: broker and load generator may share cores');
  if (os.cpus().length < 2) return off('fewer than 2 CPUs: running unpinned, broker and load generator share a core');
  try {
    execFileSync('taskset', ['-c', '0', 'true'], { stdio: 'ignore' });
    execFileSync('taskset', ['-c', '1', 'true'], { stdio: 'ignore' });
  } catch {
    return off('taskset missing or CPUs 0/1 not allowed: running unpinned, results are noisier');
  }
  return { enabled: true, brokerCpu: 0, loadCpu: 1 };
}

/** Move this (mostly idle) harness process onto the load-generator core so CPU 0 is the broker's alone. */
export function pinSelf(cpu: number): void {
  try {
    execFileSync('taskset', ['-a', '-p', '-c', String(cpu), String(process.pid)], { stdio: 'ignore' });
  } catch {
    // Not fatal: the harness is idle while a scenario runs.
  }
}

export function clockTicks(): number {
  try {
    const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());
    return v > 0 ? v : 100;
  } catch {
    return 100;
  }
}

/** Soft/hard RLIMIT_NOFILE as seen by /bin/sh (Infinity for "unlimited"). */
export function fdLimits(): { soft: number; hard: number } {
  const parse = (s: string | undefined): number => (s === undefined || s === 'unlimited' ? Infinity : Number(s));
  try {
    const [soft, hard] = execFileSync('/bin/sh', ['-c', 'ulimit -Sn; ulimit -Hn'], { encoding: 'utf8' }).trim().split('\n');
    return { soft: parse(soft), hard: parse(hard) };
  } catch {
    return { soft: 1024, hard: 1024 };
  }
}
