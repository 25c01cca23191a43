/**
 * Minimal /proc readers (Linux only). Synchronous on purpose: they are called a
 * handful of times per scenario (window edges, 200 ms RSS samples) and
 * procfs reads never block on disk.
 */
import { readFileSync, readdirSync } from 'node:fs';

/** utime+stime of one process (all its threads), in clock ticks; NaN if it is gone. */
export function processTicks(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return Number.NaN;
  }
  // The comm field (2) is in parentheses and may contain spaces, so split after the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // After comm, index 0 is "state" (field 3), so utime (14) / stime (15) are at 11 / 12.
  return Number(fields[11]) + Number(fields[12]);
}

/** Direct children of pid, read from every thread's children list. */
function childPids(pid: number): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      const txt = readFileSync(`/proc/${pid}/task/${tid}/children`, 'utf8').trim();
      if (txt) for (const c of txt.split(' ')) out.push(Number(c));
    } catch {
      // Thread exited between readdir and read, or kernel without CONFIG_PROC_CHILDREN.
    }
  }
  return out;
}

/**
 * CPU ticks of pid plus all its descendants. A broker might fork helper
 * processes (threads are already included in the process's own counters);
 * counting the whole tree keeps the comparison honest.
 */
export function treeTicks(pid: number): number {
  let total = processTicks(pid);
  if (Number.isNaN(total)) return total;
  for (const child of childPids(pid)) {
    const t = treeTicks(child);
    if (!Number.isNaN(t)) total += t;
  }
  return total;
}

/** True while pid exists and is not a zombie (a crashed broker stays a zombie until reaped). */
export function isAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.charAt(stat.lastIndexOf(')') + 2);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

/** VmRSS of pid in KiB (NaN if the process is gone). */
export function rssKb(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(status);
    return m?.[1] !== undefined ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * `write_bytes` of /proc/<pid>/io: bytes the process caused to be written to storage (pages it
 * dirtied in the page cache, counted when dirtied, so WAL frames and checkpoints count even
 * before writeback; sockets do not). NaN if unreadable (process gone, restricted /proc).
 * Like adapters/sqlite readWriteBytes, but for another process, and without importing the
 * adapter: the load generator runs from a copy of scripts/bench only (run.ts snapshotScripts).
 */
export function writeBytes(pid: number): number {
  try {
    const m = /^write_bytes:\s*(\d+)$/m.exec(readFileSync(`/proc/${pid}/io`, 'latin1'));
    return m?.[1] !== undefined ? Number(m[1]) : Number.NaN;
  } catch {
    return Number.NaN;
  }
}

/**
 * Busy ticks summed over all CPUs, from the aggregate "cpu" line of
 * /proc/stat: everything except idle and iowait, so it includes softirq and
 * (in a VM) steal time.
 */
export function machineBusyTicks(): number {
  try {
    const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0] ?? '';
    const f = line.trim().split(/\s+/).slice(1, 9).map(Number);
    const total = f.reduce((a, b) => a + b, 0);
    return total - (f[3] ?? 0) - (f[4] ?? 0);
  } catch {
    return Number.NaN;
  }
}

/** A point-in-time CPU reading of the broker tree, of this process and of the whole machine. */
export interface CpuMark {
  brokerTicks: number;
  selfMicros: number;
  machineTicks: number;
  atNs: bigint;
}

export function cpuMark(brokerPid: number): CpuMark {
  const self = process.cpuUsage();
  return {
    brokerTicks: treeTicks(brokerPid),
    selfMicros: self.user + self.system,
    machineTicks: machineBusyTicks(),
    atNs: process.hrtime.bigint(),
  };
}

/** CPU between two marks as % of one core (100 = one core fully busy). */
export function cpuBetween(
  a: CpuMark,
  b: CpuMark,
  clkTck: number,
): { brokerPct: number; loadgenPct: number; otherPct: number } {
  const wallSec = Number(b.atNs - a.atNs) / 1e9;
  const pct = (ticks: number): number => (ticks / clkTck / wallSec) * 100;
  const brokerPct = pct(b.brokerTicks - a.brokerTicks);
  const loadgenPct = ((b.selfMicros - a.selfMicros) / 1e6 / wallSec) * 100;
  const otherPct = Math.max(0, pct(b.machineTicks - a.machineTicks) - brokerPct - loadgenPct);
  return { brokerPct, loadgenPct, otherPct };
}

/** Where a process's resident memory is, in KiB (from /proc/<pid>/smaps). */
export interface MemoryBreakdown {
  rss: number;
  /** Private anonymous memory: V8's heap, malloc (glibc arenas), thread stacks. */
  anon: number;
  /** Of `anon`: the main thread's brk heap ([heap]), where most malloc()s land. */
  brkHeap: number;
  /** Pages of the Node binary (`node` itself: V8, builtins' code cache, ICU data, OpenSSL). */
  nodeBinary: number;
  /** Pages of native addons (*.node: better-sqlite3, serialport bindings). */
  addons: number;
  /** Other file-backed pages: libc, libstdc++, the database's -shm. */
  otherFiles: number;
}

/**
 * Resident memory of pid by kind of mapping; undefined if it is gone. File-backed pages are
 * shared and clean (the kernel can drop and re-read them) but count in RSS; fault-around maps up
 * to 64 KiB of them around each touched page.
 */
export function memoryBreakdown(pid: number, nodeBinary: string): MemoryBreakdown | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/smaps`, 'utf8');
  } catch {
    return undefined;
  }
  const out: MemoryBreakdown = { rss: 0, anon: 0, brkHeap: 0, nodeBinary: 0, addons: 0, otherFiles: 0 };
  let name = '';
  let rss = 0;
  for (const line of text.split('\n')) {
    // A mapping header: "start-end perms offset dev inode [path]".
    const header = /^[0-9a-f]+-[0-9a-f]+ \S+ \S+ \S+ \d+\s*(.*)$/.exec(line);
    if (header !== null) {
      name = header[1] ?? '';
      continue;
    }
    const field = /^(Rss|Anonymous):\s+(\d+) kB$/.exec(line);
    if (field === null) continue;
    const kb = Number(field[2]);
    if (field[1] === 'Anonymous') {
      out.anon += kb;
      if (name === '[heap]') out.brkHeap += kb;
      // File-backed = Rss - Anonymous (private copies of a file's pages are anonymous).
      if (name.startsWith('/')) {
        const file = rss - kb;
        if (name === nodeBinary) out.nodeBinary += file;
        else if (name.endsWith('.node')) out.addons += file;
        else out.otherFiles += file;
      }
      continue;
    }
    rss = kb;
    out.rss += kb;
  }
  return out;
}
