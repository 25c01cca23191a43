import { fstatSync } from 'node:fs';
import type { LogFields, Logger } from './broker';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

const RANK: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

function formatValue(value: string | number | boolean): string {
  const text = String(value);
  return /^[\w.:/@+-]*$/.test(text) && text !== '' ? text : JSON.stringify(text);
}

/** syslog priorities as journald reads them from a `<N>` line prefix (sd-daemon(3)). */
const JOURNAL_PRIORITY: Record<LogLevel, number> = { debug: 7, info: 6, warn: 4, error: 3 };

/**
 * `journal`: stdout or stderr is connected to the systemd journal — JOURNAL_STREAM names that
 * stream's `device:inode`, compared with ours so that output redirected elsewhere by a child of a
 * service does not get journal prefixes. `plain` otherwise.
 */
export function detectLogFormat(env: NodeJS.ProcessEnv = process.env): 'journal' | 'plain' {
  const stream = env.JOURNAL_STREAM;
  if (stream === undefined || stream === '') return 'plain';
  for (const fd of [1, 2]) {
    try {
      const st = fstatSync(fd);
      if (`${st.dev}:${st.ino}` === stream) return 'journal';
    } catch {
      // closed descriptor
    }
  }
  return 'plain';
}

/**
 * One line per event: `level message key=value …` (logfmt-style fields, so the journal and grep
 * can both read it); errors on stderr, the rest on stdout. Under systemd (`journal`) each line
 * starts with its syslog priority (`<3>` … `<7>`), which journald turns into the entry's priority,
 * and carries no time (the journal has it); otherwise each line starts with an ISO time.
 */
export function createConsoleLogger(level: LogLevel, format: 'journal' | 'plain' = detectLogFormat()): Logger & { setLevel(level: LogLevel): void } {
  let min = RANK[level];
  const write = (lvl: LogLevel, msg: string, fields?: LogFields): void => {
    if (RANK[lvl] < min) return;
    let line = `${format === 'journal' ? `<${JOURNAL_PRIORITY[lvl]}>` : `${new Date().toISOString()} `}${lvl} ${msg}`;
    if (fields) {
      for (const [key, value] of Object.entries(fields)) if (value !== undefined) line += ` ${key}=${formatValue(value)}`;
    }
    (lvl === 'error' ? process.stderr : process.stdout).write(`${line}\n`);
  };
  return {
    debug: (msg, fields) => write('debug', msg, fields),
    info: (msg, fields) => write('info', msg, fields),
    warn: (msg, fields) => write('warn', msg, fields),
    error: (msg, fields) => write('error', msg, fields),
    setLevel: (next) => {
      min = RANK[next];
    },
  };
}
