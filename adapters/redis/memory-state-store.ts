import type { StateStore } from './uplink';

/**
 * The adapter's state (stream-id epoch, downlink position) when the database is unavailable: kept
 * for the life of the process only. The gateway says so in its log when it falls back to it.
 */
export class MemoryStateStore implements StateStore {
  private readonly values = new Map<string, string>();

  get(key: string): string | undefined {
    return this.values.get(key);
  }

  set(key: string, value: string): void {
    this.values.set(key, value);
  }

  async durable(): Promise<void> {
    // nothing to wait for
  }
}
