import { readFileSync } from 'node:fs';

const SAMPLE_EVERY_MS = 60_000;
const HOUR_MS = 3_600_000;
/** One sample per minute for an hour, plus the one an hour ago. */
const SAMPLES = HOUR_MS / SAMPLE_EVERY_MS + 1;

/**
 * Bytes this process caused to be written to storage, from Linux's `/proc/self/io` `write_bytes`
 * (what reaches the block layer: WAL frames, checkpoints, the database file — and any log written
 * to a file rather than the journal; sockets and serial ports do not count). On an SD card this is
 * the number that wears it out. The per-hour figure is over the last hour (since start while the
 * process is younger than that). Unavailable (null) where `/proc/self/io` is missing.
 */
export class DiskWriteMeter {
  /** `write_bytes` once a minute, oldest first: the first is the start of the hour reported. */
  private readonly samples: number[] = [];
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly read: () => number | null = readWriteBytes) {}

  start(): void {
    if (this.timer !== undefined) return;
    this.sample();
    this.timer = setInterval(() => this.sample(), SAMPLE_EVERY_MS);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer !== undefined) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Bytes written during the last hour (or since start, if shorter), or null. */
  get lastHour(): number | null {
    const now = this.read();
    const oldest = this.samples[0];
    return now === null || oldest === undefined ? null : now - oldest;
  }

  private sample(): void {
    const bytes = this.read();
    if (bytes === null) return;
    this.samples.push(bytes);
    if (this.samples.length > SAMPLES) this.samples.shift();
  }
}

/** `write_bytes` of /proc/self/io, or null when it cannot be read (not Linux, restricted /proc). */
export function readWriteBytes(): number | null {
  try {
    const m = /^write_bytes:\s*(\d+)$/m.exec(readFileSync('/proc/self/io', 'latin1'));
    return m === null ? null : Number(m[1]);
  } catch {
    return null;
  }
}
