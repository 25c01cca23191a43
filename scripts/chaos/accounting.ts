/**
 * The chaos run's verdict (issue 9 part 2), a pure function of what the run recorded and what the
 * Redis stream holds, so it can be tested with hand-made records (test/unit/chaos-accounting.test.ts).
 *
 * The rules, per source (each MQTT client, each serial port):
 *
 * - **MQTT (QoS 1).** Every message the gateway acknowledged (PUBACK) must be in the stream exactly
 *   once. A message sent but not acknowledged (the connection died first) may be there once or not
 *   at all. Publishers never re-send a message after a reconnect, so any second copy is a
 *   duplicate made by the gateway.
 * - **Serial.** The device cannot be acknowledged, so "what the gateway read" is established from
 *   outside: an observer subscribed to `sensors/#` sees every reading the broker routed, in
 *   routing order. A reading is *read* if the observer saw it or it is in the stream.
 *   - A reading the observer saw is *committed* if the observer saw, later on the same connection
 *     (the same gateway process), an MQTT message that was acknowledged: that PUBACK waited for the
 *     commit holding that message, and the outbox is committed in routing order, so the reading
 *     (routed before) was committed too — or already confirmed by Redis. A committed reading
 *     missing from the stream is **lost**.
 *   - A reading seen but not committed, on an observer connection that ended because the gateway
 *     was `kill -9`ed, is *uncommitted at the crash*: the README's storage contract ("anything not
 *     yet committed is lost by any crash", at most `storage.flushInterval` of data). Allowed, and
 *     counted on its own. On any other connection (the last one ends with acknowledged messages
 *     after every reading), such a reading missing from the stream is lost.
 *   - A reading neither seen nor in the stream was *not read* — allowed only inside one of its
 *     port's not-read windows (`NotReadWindow`: the device unplugged or the gateway down, until the
 *     observer saw the port online again, plus the readings after the last one seen before the
 *     fault). Anywhere else it is **lost**: a gap before a reading that was seen is never
 *     explained away.
 * - **Order.** Per source, the numbers in the stream rise strictly in entry order; every entry's
 *   `seq` field equals the seq of its id (`<epoch>-<seq>`), and ids rise (XRANGE order).
 * - An entry that no source sent (an unknown number, an unparsable payload) is **unexpected**.
 *
 * Lost, duplicated, out-of-order and unexpected entries fail the run.
 */

export const FAULT_KINDS = ['redis-stop', 'redis-kill', 'redis-pause', 'gateway-kill', 'serial-unplug', 'stalled-subscriber'] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

/** One fault as it happened: from its injection until the chain had recovered (plus a settle time). */
export interface FaultWindow {
  readonly kind: FaultKind;
  readonly start: number;
  readonly end: number;
  /** What exactly (e.g. the port unplugged, the pause length). */
  readonly detail: string;
}

export interface MqttRecord {
  /** The MQTT client id (the stream's `source`). */
  readonly source: string;
  readonly n: number;
  readonly sentAt: number;
  readonly acked: boolean;
}

/** A reading written to the device end of a pty (`{"n":N}` line). */
export interface SerialRecord {
  /** The port name (the stream's `source` is `serial:<port>`). */
  readonly port: string;
  readonly n: number;
  readonly sentAt: number;
}

/** What the observer received on `sensors/#`, in order. */
export interface Observation {
  /** Observer connection number; a connection never outlives a gateway process. */
  readonly conn: number;
  readonly kind: 'mqtt' | 'serial';
  /** Client id, or port name. */
  readonly source: string;
  readonly n: number;
}

/**
 * A fault during which readings of `port` may be lost unread: those written from `start` (the
 * unplug, the kill) until `end` (the port seen online again), and those written before `start`
 * that came after the last reading the observer had seen by then (`lastSeen`): still in the pty
 * or in socat, or read and routed but not yet delivered, when the fault struck. A reading written
 * before a later one that was seen is never in a window.
 */
export interface NotReadWindow {
  readonly port: string;
  readonly start: number;
  readonly end: number;
  readonly lastSeen: number;
}

/** Whether reading `n` of `port`, written at `sentAt`, may have gone unread in window `w`. */
function inNotReadWindow(w: NotReadWindow, port: string, n: number, sentAt: number): boolean {
  return w.port === port && sentAt <= w.end && (sentAt >= w.start || n > w.lastSeen);
}

/** One entry of the uplink stream, as XRANGE returns it. */
export interface StreamEntry {
  readonly id: string;
  readonly fields: Readonly<Record<string, string>>;
}

export interface AccountingInput {
  readonly faults: readonly FaultWindow[];
  readonly mqtt: readonly MqttRecord[];
  readonly serial: readonly SerialRecord[];
  readonly observations: readonly Observation[];
  /** Observer connections that ended because the gateway was SIGKILLed. */
  readonly killedConnections: ReadonlySet<number>;
  readonly notReadWindows: readonly NotReadWindow[];
  readonly stream: readonly StreamEntry[];
}

export interface MqttCounts {
  sent: number;
  acked: number;
  /** Sent messages found in the stream (at least once). */
  delivered: number;
  /** Copies beyond the first. */
  duplicates: number;
  /** Acknowledged, not in the stream. */
  lost: number;
}

export interface SerialCounts {
  sent: number;
  /** Seen by the observer or in the stream. */
  read: number;
  delivered: number;
  duplicates: number;
  lost: number;
  /** Allowed: written in a not-read window, never seen, not in the stream. */
  notRead: number;
  /** Allowed: seen, not committed when the gateway was killed, not in the stream. */
  uncommitted: number;
}

export interface AccountingRow {
  /** A fault kind, `none` (no fault going on) or `total`. */
  readonly window: string;
  /** Fault instances of this kind. */
  readonly faults: number;
  readonly mqtt: MqttCounts;
  readonly serial: SerialCounts;
}

export interface AccountingResult {
  readonly rows: readonly AccountingRow[];
  readonly total: AccountingRow;
  readonly outOfOrder: number;
  readonly unexpected: number;
  /** Human-readable reasons the run failed, at most a few examples per kind; empty = pass. */
  readonly failures: readonly string[];
}

const SERIAL_SOURCE_PREFIX = 'serial:';
const EXAMPLES = 5;

const key = (source: string, n: number): string => `${source}\u0000${n}`;

function emptyMqtt(): MqttCounts {
  return { sent: 0, acked: 0, delivered: 0, duplicates: 0, lost: 0 };
}

function emptySerial(): SerialCounts {
  return { sent: 0, read: 0, delivered: 0, duplicates: 0, lost: 0, notRead: 0, uncommitted: 0 };
}

/** The number a stream entry carries: the payload, a decimal integer. */
function numberOf(entry: StreamEntry): number | undefined {
  const payload = entry.fields.payload ?? '';
  return /^\d{1,15}$/.test(payload) ? Number(payload) : undefined;
}

/** Stream source of an MQTT client or serial port record. */
function streamSource(kind: 'mqtt' | 'serial', source: string): string {
  return kind === 'serial' ? `${SERIAL_SOURCE_PREFIX}${source}` : source;
}

export function account(input: AccountingInput): AccountingResult {
  const failures = new Map<string, string[]>();
  const fail = (kind: string, example: string): void => {
    const list = failures.get(kind) ?? [];
    list.push(example);
    failures.set(kind, list);
  };

  // --- the stream: copies per (source, n), order, seq ---
  const copies = new Map<string, number>();
  const sentKeys = new Set<string>([...input.mqtt.map((m) => key(m.source, m.n)), ...input.serial.map((s) => key(streamSource('serial', s.port), s.n))]);
  const highest = new Map<string, number>();
  let outOfOrder = 0;
  let unexpected = 0;
  for (const entry of input.stream) {
    const idSeq = /^(\d+)-(\d+)$/.exec(entry.id)?.[2];
    if (idSeq === undefined || entry.fields.seq !== idSeq) fail('seq field differs from the entry id', `${entry.id}: seq=${entry.fields.seq ?? '(none)'}`);
    const source = entry.fields.source ?? '';
    const n = numberOf(entry);
    if (n === undefined || !sentKeys.has(key(source, n))) {
      unexpected++;
      fail('unexpected entries (never sent)', `${entry.id} source=${source} payload=${JSON.stringify(entry.fields.payload ?? '')}`);
      continue;
    }
    const k = key(source, n);
    copies.set(k, (copies.get(k) ?? 0) + 1);
    const top = highest.get(source);
    if (top !== undefined && n < top) {
      outOfOrder++;
      fail('out of order', `${entry.id} ${source} n=${n} after n=${top}`);
    }
    if (top === undefined || n > top) highest.set(source, n);
  }

  // --- which serial readings the observer saw, and which of those were committed ---
  const ackedKeys = new Set(input.mqtt.filter((m) => m.acked).map((m) => key(m.source, m.n)));
  const seen = new Map<string, { committed: boolean; killed: boolean }>();
  const ackedLaterOn = new Set<number>();
  for (let i = input.observations.length - 1; i >= 0; i--) {
    const o = input.observations[i] as Observation;
    if (o.kind === 'mqtt') {
      if (ackedKeys.has(key(o.source, o.n))) ackedLaterOn.add(o.conn);
      continue;
    }
    const k = key(streamSource('serial', o.source), o.n);
    const earlier = seen.get(k);
    const committed = ackedLaterOn.has(o.conn) || (earlier?.committed ?? false);
    seen.set(k, { committed, killed: input.killedConnections.has(o.conn) && !committed });
  }

  // --- per window ---
  const rows = new Map<string, AccountingRow>();
  const rowFor = (window: string): AccountingRow => {
    let row = rows.get(window);
    if (row === undefined) {
      row = { window, faults: 0, mqtt: emptyMqtt(), serial: emptySerial() };
      rows.set(window, row);
    }
    return row;
  };
  rowFor('none');
  for (const f of input.faults) (rowFor(f.kind) as { faults: number }).faults++;
  const windowOf = (at: number): string => input.faults.find((f) => at >= f.start && at <= f.end)?.kind ?? 'none';

  for (const m of input.mqtt) {
    const c = rowFor(windowOf(m.sentAt)).mqtt;
    const found = copies.get(key(m.source, m.n)) ?? 0;
    c.sent++;
    if (m.acked) c.acked++;
    if (found > 0) c.delivered++;
    if (found > 1) {
      c.duplicates += found - 1;
      fail('duplicates', `${m.source} n=${m.n} × ${found}`);
    }
    if (m.acked && found === 0) {
      c.lost++;
      fail('acknowledged MQTT messages lost', `${m.source} n=${m.n} sent at ${new Date(m.sentAt).toISOString()}`);
    }
  }

  for (const s of input.serial) {
    const c = rowFor(windowOf(s.sentAt)).serial;
    const k = key(streamSource('serial', s.port), s.n);
    const found = copies.get(k) ?? 0;
    const observed = seen.get(k);
    c.sent++;
    if (found > 0 || observed !== undefined) c.read++;
    if (found > 0) c.delivered++;
    if (found > 1) {
      c.duplicates += found - 1;
      fail('duplicates', `serial:${s.port} n=${s.n} × ${found}`);
    }
    if (found > 0) continue;
    const at = new Date(s.sentAt).toISOString();
    if (observed === undefined) {
      if (input.notReadWindows.some((w) => inNotReadWindow(w, s.port, s.n, s.sentAt))) c.notRead++;
      else {
        c.lost++;
        fail('serial readings lost (never seen, outside an unplug or gateway-down window)', `serial:${s.port} n=${s.n} written at ${at}`);
      }
    } else if (observed.killed) c.uncommitted++;
    else {
      c.lost++;
      fail('serial readings lost (read by the gateway, not in the stream)', `serial:${s.port} n=${s.n} written at ${at}${observed.committed ? ', committed' : ''}`);
    }
  }

  const ordered = ['none', ...FAULT_KINDS].map((w) => rows.get(w)).filter((r): r is AccountingRow => r !== undefined && (r.faults > 0 || r.window === 'none'));
  const total: AccountingRow = { window: 'total', faults: input.faults.length, mqtt: emptyMqtt(), serial: emptySerial() };
  for (const r of ordered) {
    for (const k of Object.keys(total.mqtt) as (keyof MqttCounts)[]) total.mqtt[k] += r.mqtt[k];
    for (const k of Object.keys(total.serial) as (keyof SerialCounts)[]) total.serial[k] += r.serial[k];
  }
  const reasons = [...failures].map(([kind, examples]) => `${kind}: ${examples.length} (e.g. ${examples.slice(0, EXAMPLES).join('; ')})`);
  return { rows: ordered, total, outOfOrder, unexpected, failures: reasons };
}

/** The verdict as two Markdown tables (MQTT, serial) with one row per fault kind and the total. */
export function formatTables(result: AccountingResult): string {
  const all = [...result.rows, result.total];
  const label = (r: AccountingRow): string => (r.window === 'total' || r.window === 'none' ? `**${r.window}**` : `${r.window} (×${r.faults})`);
  const mqtt = [
    '| window (sent during) | sent | acknowledged | delivered | duplicates | lost |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...all.map((r) => `| ${label(r)} | ${r.mqtt.sent} | ${r.mqtt.acked} | ${r.mqtt.delivered} | ${r.mqtt.duplicates} | ${r.mqtt.lost} |`),
  ];
  const serial = [
    '| window (written during) | sent | read | delivered | duplicates | lost | not read (unplugged/down) | uncommitted at kill -9 |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...all.map((r) => `| ${label(r)} | ${r.serial.sent} | ${r.serial.read} | ${r.serial.delivered} | ${r.serial.duplicates} | ${r.serial.lost} | ${r.serial.notRead} | ${r.serial.uncommitted} |`),
  ];
  return `MQTT QoS 1 publishers\n\n${mqtt.join('\n')}\n\nSerial sensors\n\n${serial.join('\n')}\n\nout of order: ${result.outOfOrder}, unexpected entries: ${result.unexpected}\n`;
}
