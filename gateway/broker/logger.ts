/**
 * The broker's logging port. The composition root supplies the implementation; the core only
 * needs four levels and structured fields.
 */
export type LogFields = Record<string, string | number | boolean | undefined>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
};

/**
 * Logs the first occurrence of an event and then at most once per `intervalMs`, with the number
 * of occurrences that were not logged. Used for limits, which can fire thousands of times a
 * second under overload and must not flood the journal of an SD card.
 */
export class RateLimitedLog {
  private lastAt = -Infinity;
  private suppressed = 0;

  constructor(
    private readonly log: (msg: string, fields?: LogFields) => void,
    private readonly intervalMs = 60_000,
  ) {}

  emit(msg: string, fields?: LogFields, now = Date.now()): void {
    if (now - this.lastAt < this.intervalMs) {
      this.suppressed++;
      return;
    }
    const suppressed = this.suppressed;
    this.lastAt = now;
    this.suppressed = 0;
    this.log(msg, suppressed > 0 ? { ...fields, suppressedSinceLast: suppressed } : fields);
  }
}
