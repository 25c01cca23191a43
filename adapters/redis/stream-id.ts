import type Redis from 'ioredis';

/**
 * Redis stream entry ids are `<ms>-<seq>`, two unsigned 64-bit numbers compared in that order.
 * The uplink writes `<epoch>-<outbox seq>` (built by its append script): never the wall clock (a Pi has no RTC), and strictly
 * increasing, so that a re-sent entry is refused by Redis ("equal or smaller than the target
 * stream top item") instead of being stored twice. The epoch only changes when an id turns out to
 * be in the stream with other content (uplink.ts APPEND_SCRIPT): the new epoch is above everything
 * in the stream, so this gateway's entries are accepted again.
 */
export interface StreamId {
  readonly ms: bigint;
  readonly seq: bigint;
}

export function parseStreamId(text: string): StreamId | null {
  const m = /^(\d+)-(\d+)$/.exec(text);
  return m === null ? null : { ms: BigInt(m[1] as string), seq: BigInt(m[2] as string) };
}

/**
 * The last id the stream ever generated (kept by Redis even when the entries were trimmed or
 * deleted), or null when the stream does not exist.
 */
export async function lastGeneratedId(redis: Redis, key: string): Promise<StreamId | null> {
  let info: unknown;
  try {
    info = await redis.xinfo('STREAM', key);
  } catch (err) {
    if (/no such key/i.test(err instanceof Error ? err.message : String(err))) return null;
    throw err;
  }
  if (!Array.isArray(info)) return null;
  const at = info.indexOf('last-generated-id');
  const value = at >= 0 ? info[at + 1] : undefined;
  return typeof value === 'string' ? parseStreamId(value) : null;
}
