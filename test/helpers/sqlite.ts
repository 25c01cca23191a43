/** Temp folders and loggers for the SQLite storage tests. */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { LogFields, Logger } from '../../gateway/broker';

/**
 * A fresh folder with a tmpfs of `size` (e.g. "2m") mounted on it, for real "disk full" faults;
 * unmounted, then removed, when `t` ends. A string instead when it cannot be had here (not root,
 * or mount refused): the reason to skip with.
 */
export function smallFileSystem(t: Test, size: string): { readonly dir: string } | string {
  if (process.getuid?.() !== 0) return 'needs root to mount a small tmpfs';
  const dir = tempDir(t, 'edgeway-tmpfs-');
  if (spawnSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir]).status !== 0) return 'cannot mount tmpfs here';
  // Teardowns run last-registered first: unmounted before tempDir removes the folder.
  t.teardown(() => void spawnSync('umount', ['-l', dir]));
  return { dir };
}

/** A fresh folder, removed when `t` ends. */
export function tempDir(t: Test, prefix = 'edgeway-sqlite-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

export interface LogLine {
  readonly level: 'debug' | 'info' | 'warn' | 'error';
  readonly msg: string;
  readonly fields?: LogFields;
}

/** A logger that records every line, for asserting that a fault was logged clearly. */
export function recordingLogger(): Logger & { readonly lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: LogLine['level']) => (msg: string, fields?: LogFields) => {
    lines.push({ level, msg, fields });
  };
  return { lines, debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') };
}
