import type Redis from 'ioredis';
import { errorMessage, RateLimitedLog, type Logger, type Outbox, type OutboxEntry } from '../../gateway/broker';
import { backoff, describeRedisError } from './connection';
import type { RedisSettings } from './settings';
import { BatchEncoder, FIELDS_PER_ENTRY } from './batch-encoding';
import { lastGeneratedId } from './stream-id';

/** Small named values kept across restarts, written with the storage's group commit. */
export interface StateStore {
  get(key: string): string | undefined;
  set(key: string, value: string): void;
  /** Resolves once what was set so far is stored. */
  durable(): Promise<void>;
}

export type UplinkState = 'disconnected' | 'connected' | 'draining';

export interface UplinkStats {
  readonly state: UplinkState;
  /** Entries in the outbox not yet confirmed by Redis. */
  readonly backlog: number;
  /** Age of the oldest of them in ms (by arrival time), 0 when none. */
  readonly oldestAgeMs: number;
  /** Entries Redis confirmed since start (including ones it already had). */
  readonly delivered: number;
  /** Of those, entries Redis refused as already present (a re-send after a lost reply or a crash). */
  readonly alreadyPresent: number;
  /** Batches that failed (timeout, connection lost, error reply); each is retried. */
  readonly failures: number;
  /** Times the stream-id epoch moved (see stream-id.ts); each is logged. */
  readonly epochChanges: number;
  readonly epoch: string;
  readonly lastError: string | undefined;
}

const EPOCH_KEY = 'uplink.epoch';

/**
 * Appends a batch in order and stops at the first entry Redis refuses for any reason other than
 * "already there". A pipeline of XADDs cannot promise that: if entry k failed (out of memory) and
 * k + 1 succeeded, k would later be refused as "smaller than the top item" and counted as
 * delivered — lost. A script runs atomically, so what it reports is exactly what the stream holds.
 *
 * "Already there" is checked, not assumed: the entry with that id must carry the same `ts` and
 * `source` (the seq may have been handed out twice: a power cut with `sync: normal` can lose the
 * database's last commits after Redis confirmed them; a replaced database starts again at 1;
 * two gateways may share an id). An id the stream no longer has counts as there only if it is
 * older than the stream's first entry (trimmed). Anything else is a CONFLICT: the uplink then
 * moves to a higher epoch and sends the entry again.
 * Batches are pipelined (several in flight, see BATCHES_IN_FLIGHT), so a batch sent behind another
 * must not run when that one did not store all of its entries — its entries would stand behind a
 * hole. It names the previous batch's last entry (id, ts, source): the stream's top entry must be
 * exactly that one, else it stores nothing and returns EDGEWAY_GAP (the uplink re-sends from its
 * cursor; entries already there are recognised as above).
 * ARGV: maxLen, gateway, epoch, the batch as one MessagePack array (batch-encoding.ts: seq, topic,
 * payload, qos, retain, ts, source, properties per entry; the `properties` field is only written
 * when there are any), then the previous batch's last seq, ts and source
 * (empty strings for the first batch in flight).
 * Returns {added, alreadyPresent, error?}.
 */
const APPEND_SCRIPT = `
local function older(a, b)
  local a1, a2 = string.match(a, '^(%d+)-(%d+)$')
  local b1, b2 = string.match(b, '^(%d+)-(%d+)$')
  a1, a2, b1, b2 = tonumber(a1), tonumber(a2), tonumber(b1), tonumber(b2)
  return a1 < b1 or (a1 == b1 and a2 < b2)
end
if ARGV[5] ~= '' then
  local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
  local ok = false
  if #top == 1 and top[1][1] == ARGV[3] .. '-' .. ARGV[5] then
    local f = top[1][2]
    local ts, source
    for j = 1, #f, 2 do
      if f[j] == 'ts' then ts = f[j + 1] elseif f[j] == 'source' then source = f[j + 1] end
    end
    ok = ts == ARGV[6] and source == ARGV[7]
  end
  if not ok then return {0, 0, 'EDGEWAY_GAP'} end
end
local e = cmsgpack.unpack(ARGV[4])
local added, present = 0, 0
for i = 1, #e, ${FIELDS_PER_ENTRY} do
  local id = ARGV[3] .. '-' .. e[i]
  local r
  if e[i + 7] == '' then
    r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
      'topic', e[i + 1], 'payload', e[i + 2], 'qos', e[i + 3], 'retain', e[i + 4],
      'ts', e[i + 5], 'seq', e[i], 'gateway', ARGV[2], 'source', e[i + 6])
  else
    r = redis.pcall('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], id,
      'topic', e[i + 1], 'payload', e[i + 2], 'qos', e[i + 3], 'retain', e[i + 4],
      'ts', e[i + 5], 'seq', e[i], 'gateway', ARGV[2], 'source', e[i + 6], 'properties', e[i + 7])
  end
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'equal or smaller', 1, true) then return {added, present, r.err} end
    local found = redis.call('XRANGE', KEYS[1], id, id)
    local same = false
    if #found == 1 then
      local ts, source
      local f = found[1][2]
      for j = 1, #f, 2 do
        if f[j] == 'ts' then ts = f[j + 1] elseif f[j] == 'source' then source = f[j + 1] end
      end
      same = ts == e[i + 5] and source == e[i + 6]
    else
      local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
      same = #first == 1 and older(id, first[1][1])
    end
    if not same then return {added, present, 'EDGEWAY_CONFLICT ' .. id} end
    present = present + 1
  else
    added = added + 1
  end
end
return {added, present}
`;

/**
 * Bytes of payload per batch, and in flight altogether, at most: what is in flight must fit well
 * within `commandTimeout` on a slow link (a pipelined batch's timeout runs while it waits behind
 * the others).
 */
const MAX_BATCH_BYTES = 512 * 1024;
/**
 * Batches sent without waiting for the previous reply. One at a time, the drain rate is
 * batchSize per round trip: 5,000 msg/s over a 100 ms mobile link, and on a busy gateway each
 * round trip also waits for a turn of the event loop. Four keep the link busy; the script's gap
 * check keeps them in order.
 */
const BATCHES_IN_FLIGHT = 4;
/**
 * After sending everything there was (live traffic, no backlog), wait this long (ms) before the
 * next read: without it every turn of the event loop that appended a few messages becomes a
 * script call of its own, and that per-call cost (ioredis, a socket write, the script's start)
 * was most of the uplink's CPU at moderate rates (scripts/bench/uplink.ts --only steady). Well
 * inside the storage's commit window, so what Redis confirms is still never written locally.
 */
const LINGER_MS = 5;
/** Consecutive timeouts after which the connection is replaced (a dead TCP peer gives no error). */
const TIMEOUTS_BEFORE_RECONNECT = 3;

type AppendReply = [added: number, alreadyPresent: number, error?: string];
type WithAppend = Redis & { edgewayUplinkAppend(key: string, ...args: (string | number | Buffer)[]): Promise<AppendReply> };

/**
 * Drains the outbox into a Redis stream, in seq order, exactly once (issue 5, item 2).
 *
 * One loop: read the next batch after the cursor, XADD each entry with the explicit id
 * `<epoch>-<seq>` in one script call (APPEND_SCRIPT), advance the cursor over the entries Redis
 * confirmed — an "ID equal or smaller than the top item" refusal also confirms: the entry is there
 * already, from a batch whose reply was lost or a run that was killed before acknowledging — and
 * acknowledge them in the outbox, which deletes them with the next group commit. On any other
 * error the rest of the batch is left for the next attempt, after a back-off. Live messages are
 * never sent ahead of older ones: there is only the cursor. Entries not committed yet are read
 * too (outbox.ts ReadOptions): a live message goes out at once, and if Redis confirms it within
 * the commit window the outbox never writes it.
 */
export class Uplink {
  private running = false;
  private loop: Promise<void> | undefined;
  private cursor = 0;
  private epoch: bigint;
  /** The stream's last id was checked against the epoch on this connection. */
  private epochChecked = false;
  private wakeUp: (() => void) | undefined;
  /** Waiting for new entries (not backing off). */
  private idle = false;
  private timeoutsInARow = 0;
  private unwatch: (() => void) | undefined;
  private state: UplinkState = 'disconnected';
  private lastError: string | undefined;
  private nextSendAt = 0;
  private readonly counters = { delivered: 0, alreadyPresent: 0, failures: 0, epochChanges: 0 };
  private readonly errorLog: RateLimitedLog;
  private readonly epochLog: RateLimitedLog;

  constructor(
    private readonly redis: Redis,
    private readonly outbox: Outbox,
    private readonly store: StateStore,
    private readonly settings: RedisSettings,
    private readonly logger: Logger,
    /** Called when the state changes (the adapter publishes the status topic). */
    private readonly onStateChange: (state: UplinkState) => void,
    /** Called when a batch has left the outbox (its deletion committed): the backlog changed. */
    private readonly onProgress: () => void = () => undefined,
  ) {
    this.epoch = BigInt(store.get(EPOCH_KEY) ?? '0');
    this.errorLog = new RateLimitedLog((msg, fields) => logger.warn(msg, fields));
    this.epochLog = new RateLimitedLog((msg, fields) => logger.warn(msg, fields));
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    // EVALSHA, with EVAL when the script is not cached (after a Redis restart): ioredis handles it.
    this.redis.defineCommand('edgewayUplinkAppend', { numberOfKeys: 1, lua: APPEND_SCRIPT });
    // New entries end an idle wait, not a back-off: a Redis that refuses must not be retried at
    // the pace sensors publish.
    this.unwatch = this.outbox.watch(() => {
      if (this.idle) this.wake();
    });
    this.redis.on('ready', this.onReady);
    this.redis.on('close', this.onClose);
    this.loop = this.run();
  }

  /** Stops after the batch in progress (its confirmations are still acknowledged). */
  async stop(): Promise<void> {
    this.running = false;
    this.unwatch?.();
    this.redis.off('ready', this.onReady);
    this.redis.off('close', this.onClose);
    this.wake();
    await this.loop;
  }

  /** Entries in the outbox not yet confirmed by Redis (cheap: no database read). */
  get backlog(): number {
    return this.outbox.stats().size;
  }

  stats(): UplinkStats {
    let oldest: OutboxEntry | undefined;
    try {
      oldest = this.outbox.read(this.cursor, 1)[0];
    } catch {
      // closed (the gateway is stopping): no age to report
    }
    return {
      state: this.state,
      backlog: this.backlog,
      oldestAgeMs: oldest === undefined ? 0 : Math.max(0, Date.now() - oldest.arrivedAt),
      ...this.counters,
      epoch: this.epoch.toString(),
      lastError: this.lastError,
    };
  }

  private readonly onReady = (): void => {
    this.epochChecked = false;
    this.wake();
  };

  private readonly onClose = (): void => {
    this.setState('disconnected');
    this.wake();
  };

  private wake(): void {
    const wake = this.wakeUp;
    this.wakeUp = undefined;
    wake?.();
  }

  /** Waits for a (re)connection, stop, `ms` if given, and new entries if `forEntries`. */
  private sleep(ms: number | undefined, forEntries: boolean): Promise<void> {
    return new Promise((resolve) => {
      const timer = ms === undefined ? undefined : setTimeout(() => this.wake(), ms);
      this.idle = forEntries;
      this.wakeUp = () => {
        if (timer !== undefined) clearTimeout(timer);
        this.idle = false;
        resolve();
      };
    });
  }

  private setState(state: UplinkState): void {
    if (state === this.state) return;
    this.state = state;
    this.onStateChange(state);
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (this.running) {
      if (this.redis.status !== 'ready') {
        this.setState('disconnected');
        await this.sleep(undefined, true);
        continue;
      }
      try {
        if (!this.epochChecked) await this.checkEpoch();
        const sent = await this.sendWindow();
        if (sent === 'nothing') {
          this.setState('connected');
          await this.sleep(undefined, true);
          continue;
        }
        attempt = 0;
        this.timeoutsInARow = 0;
        this.lastError = undefined;
        // Caught up with live traffic: let messages gather instead of sending every few.
        if (sent === 'caught-up') await this.sleep(LINGER_MS, false);
      } catch (err) {
        if (err instanceof EpochConflict) {
          await this.moveToNewEpoch(err.id);
          continue;
        }
        attempt++;
        this.counters.failures++;
        this.lastError = describeRedisError(err);
        this.errorLog.emit('redis uplink: batch not confirmed; retrying', { stream: this.settings.uplink.stream, error: this.lastError, failures: this.counters.failures });
        this.epochChecked = false;
        if (/timed out/i.test(errorMessage(err)) && ++this.timeoutsInARow >= TIMEOUTS_BEFORE_RECONNECT) {
          // A peer that vanished without a reset only times out; a new connection finds out.
          this.timeoutsInARow = 0;
          this.redis.disconnect(true);
        }
        const { initialDelay, maxDelay } = this.settings.reconnect;
        await this.sleep(backoff(attempt, initialDelay, maxDelay), false);
      }
    }
  }

  /**
   * Sends up to BATCHES_IN_FLIGHT batches after the cursor without waiting in between (one when
   * `replayRate` paces them), then settles the replies in order. A reply after a failed one is not
   * used: its entries are re-sent from the cursor and recognised there. Resolves 'nothing' when
   * there was nothing to send, 'caught-up' when it sent everything there was, 'more' when it
   * stopped at the window; throws what the first failed batch threw.
   */
  private async sendWindow(): Promise<'nothing' | 'caught-up' | 'more'> {
    const sends: { batch: Batch; reply: Promise<AppendReply> }[] = [];
    const window = this.settings.uplink.replayRate > 0 ? 1 : BATCHES_IN_FLIGHT;
    let budget = MAX_BATCH_BYTES;
    let previous: Batch | undefined;
    let caughtUp = false;
    while (sends.length < window && budget > 0 && this.running) {
      const batch = this.nextBatch(previous?.lastSeq ?? this.cursor, budget);
      caughtUp = batch.all;
      if (batch.count === 0) break;
      // Draining while stored entries wait behind this batch; live traffic alone is "connected"
      // (judged by batch size, busy live traffic flapped between the two at every batch).
      if (sends.length === 0) this.setState(this.outbox.read(batch.lastSeq, 1).length > 0 ? 'draining' : 'connected');
      await this.pace(batch.count);
      if (!this.running) break;
      budget -= batch.payloadBytes;
      sends.push({ batch, reply: this.append(batch, previous) });
      previous = batch;
    }
    let failure: unknown;
    let settled = true;
    for (const { batch, reply } of sends) {
      try {
        const result = await reply;
        // A gap refusal is no failure: the batch before it was a re-send of entries Redis already
        // had beyond it (after a restart), or failed itself. The next window starts at the cursor.
        if (failure === undefined && settled) settled = this.confirm(batch, result);
      } catch (err) {
        failure ??= err;
      }
    }
    if (failure !== undefined) throw failure;
    if (sends.length === 0) return 'nothing';
    return caughtUp ? 'caught-up' : 'more';
  }

  /**
   * The next entries after `after`, encoded as they are read (no entry is kept: see BatchEncoder):
   * at most batchSize, and at most `maxBytes` of payload (at least one).
   */
  private nextBatch(after: number, maxBytes: number): Batch {
    const limit = this.batchLimit();
    const encoder = new BatchEncoder();
    let firstSeq = 0;
    // Only when the seqs have a gap (entries dropped or refused): else firstSeq + index.
    let seqs: number[] | undefined;
    let payloadBytes = 0;
    let cut = false;
    let lastSeq = after;
    let lastArrivedAt = 0;
    let lastData: Uint8Array | undefined;
    let lastSourceStart = 0;
    let lastSourceEnd = 0;
    // Pending too: a live message is sent right away, and one Redis confirms before the group
    // commit is never written to the gateway's disk (outbox.ts ReadOptions).
    this.outbox.scanRaw(after, limit, (entry) => {
      const size = entry.payloadEnd - entry.payloadStart;
      if (encoder.count > 0 && payloadBytes + size > maxBytes) {
        cut = true;
        return false;
      }
      if (encoder.count === 0) firstSeq = entry.seq;
      else if (seqs !== undefined) seqs.push(entry.seq);
      else if (entry.seq !== lastSeq + 1) {
        seqs = Array.from({ length: encoder.count }, (_, i) => firstSeq + i);
        seqs.push(entry.seq);
      }
      encoder.add(entry);
      payloadBytes += size;
      lastSeq = entry.seq;
      lastArrivedAt = entry.arrivedAt;
      // Only the last entry's source is needed (the next batch's gap check): decoded once, below.
      lastData = entry.data;
      lastSourceStart = entry.sourceStart;
      lastSourceEnd = entry.sourceEnd;
      return true;
    }, { pending: true });
    const count = encoder.count;
    const lastSource = lastData === undefined ? '' : Buffer.from(lastData.buffer, lastData.byteOffset, lastData.byteLength).toString('utf8', lastSourceStart, lastSourceEnd);
    return {
      encoded: encoder.finish(),
      count,
      seqOf: seqsOf(firstSeq, seqs),
      payloadBytes,
      lastSeq,
      lastArrivedAt,
      lastSource,
      all: !cut && count < limit,
    };
  }

  /** With a replay rate, batches are small enough to be spread over the second. */
  private batchLimit(): number {
    const rate = this.settings.uplink.replayRate;
    const size = this.settings.uplink.batchSize;
    return rate > 0 ? Math.max(1, Math.min(size, Math.floor(rate / 10))) : size;
  }

  /** Holds the loop so that the average rate stays at most `replayRate` messages per second. */
  private async pace(count: number): Promise<void> {
    const rate = this.settings.uplink.replayRate;
    if (rate <= 0) return;
    const now = Date.now();
    // Not woken by new entries (those only matter once the pace allows another batch); a
    // connection event ends one wait early, so wait again until the time has come.
    while (this.running && Date.now() < this.nextSendAt) await this.sleep(this.nextSendAt - Date.now(), false);
    this.nextSendAt = Math.max(this.nextSendAt, now) + (count * 1000) / rate;
  }

  /**
   * On every (re)connection: if the stream was last written under a higher epoch than the one
   * stored here (an epoch change lost with the database's last commits), continue under that
   * epoch — the entries already there are then recognised by APPEND_SCRIPT, not sent twice.
   */
  private async checkEpoch(): Promise<void> {
    const top = await lastGeneratedId(this.redis, this.settings.uplink.stream);
    if (top !== null && top.ms > this.epoch) await this.setEpoch(top.ms, 'the stream was written under a higher epoch than the one stored here');
    this.epochChecked = true;
  }

  /**
   * An entry's seq is in the stream with other content (see APPEND_SCRIPT): continue above
   * everything the stream holds, so this gateway's entries are accepted again, none lost.
   */
  private async moveToNewEpoch(conflictingId: string): Promise<void> {
    try {
      const top = await lastGeneratedId(this.redis, this.settings.uplink.stream);
      const epoch = (top !== null && top.ms > this.epoch ? top.ms : this.epoch) + 1n;
      await this.setEpoch(epoch, `entry ${conflictingId} is in the stream with other content (database replaced, a power cut lost its last commits, or another gateway uses the same id)`);
    } catch (err) {
      this.lastError = describeRedisError(err);
      await this.sleep(this.settings.reconnect.initialDelay, false);
    }
  }

  /** Stores the new epoch durably before any entry is sent under it. */
  private async setEpoch(epoch: bigint, reason: string): Promise<void> {
    // Rate-limited: two gateways sharing one id would otherwise log this on every batch.
    this.epochLog.emit('redis uplink: continuing with a new stream-id epoch', { stream: this.settings.uplink.stream, from: this.epoch.toString(), to: epoch.toString(), reason, epochChanges: this.counters.epochChanges + 1 });
    this.store.set(EPOCH_KEY, epoch.toString());
    await this.store.durable();
    this.epoch = epoch;
    this.counters.epochChanges++;
  }

  private append(batch: Batch, previous: Batch | undefined): Promise<AppendReply> {
    const { stream, maxLen } = this.settings.uplink;
    const behind = previous === undefined ? ['', '', ''] : [String(previous.lastSeq), String(previous.lastArrivedAt), previous.lastSource];
    return (this.redis as WithAppend).edgewayUplinkAppend(stream, maxLen, this.settings.gatewayId, this.epoch.toString(), batch.encoded, ...behind);
  }

  /**
   * Takes a batch's reply: advances the cursor over what Redis confirmed; throws for the rest.
   * False when the script refused the batch for a gap behind it (nothing stored, nothing confirmed).
   */
  private confirm(batch: Batch, [added, present, error]: AppendReply): boolean {
    if (error === 'EDGEWAY_GAP') return false;
    const done = Math.min(batch.count, added + present);
    this.counters.delivered += done;
    this.counters.alreadyPresent += present;
    if (done > 0) {
      const confirmed = batch.seqOf(done - 1);
      this.cursor = confirmed;
      // Not awaited: the deletion rides on the next group commit, and the cursor already skips
      // these entries. If the gateway dies first, they are sent again and Redis refuses them.
      this.outbox.ack(confirmed).then(this.onProgress, (err: unknown) => this.logger.warn('redis uplink: acknowledging in the outbox failed', { error: errorMessage(err) }));
    }
    if (error === undefined) return true;
    if (error.startsWith('EDGEWAY_CONFLICT ')) throw new EpochConflict(error.slice('EDGEWAY_CONFLICT '.length));
    throw new Error(`Redis refused entry seq ${done < batch.count ? String(batch.seqOf(done)) : '?'}: ${error}`);
  }
}

function seqsOf(firstSeq: number, seqs: readonly number[] | undefined): (i: number) => number {
  return seqs === undefined ? (i) => firstSeq + i : (i) => seqs[i] as number;
}

/** A batch as sent: encoded once, with what confirming it and the next batch's gap check need. */
interface Batch {
  readonly encoded: Buffer;
  readonly count: number;
  /** The seq of the entry at index i of the batch (seqs may have gaps). */
  readonly seqOf: (i: number) => number;
  readonly payloadBytes: number;
  readonly lastSeq: number;
  readonly lastArrivedAt: number;
  readonly lastSource: string;
  /** Every entry readable at the time was taken (caught up). */
  readonly all: boolean;
}

/** APPEND_SCRIPT found an entry's id in the stream with other content. */
class EpochConflict extends Error {
  constructor(readonly id: string) {
    super(`stream id ${id} holds other content`);
  }
}
