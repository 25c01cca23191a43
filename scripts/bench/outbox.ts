/**
 * Outbox benchmark (issue 4): SqliteOutbox append throughput at 64-byte and 1-KB payloads with
 * group commit on (flushInterval 50 ms) and off (0: one transaction per append), read-and-ack
 * throughput, and the bytes this process caused to be written to storage per message
 * (`write_bytes` of /proc/self/io, which counts page-cache writeback attributed to us: WAL frames,
 * checkpoints into the main file; measured from open to close, so the final checkpoint is
 * included). Bounded in messages and seconds per case. Prints a Markdown table.
 *
 *   npm run build && node dist/scripts/bench/outbox.js [--count 200000] [--seconds 15] [--dir /tmp] [--sync normal|full]
 *
 * Each append() call carries ONE message, as the broker will append one PUBLISH at a time; the
 * producer keeps at most --window messages unresolved (a broker is bounded the same way by its
 * clients' inflight windows).
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { readWriteBytes, SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';
import type { OutboxInput } from '../../gateway/broker';

const { values } = parseArgs({
  options: {
    count: { type: 'string', default: '200000' },
    'count-nogroup': { type: 'string', default: '5000' },
    seconds: { type: 'string', default: '15' },
    window: { type: 'string', default: '50000' },
    dir: { type: 'string', default: tmpdir() },
    sync: { type: 'string', default: 'normal' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (values.help === true) {
  process.stdout.write('usage: node dist/scripts/bench/outbox.js [--count N] [--count-nogroup N] [--seconds S] [--window N] [--dir D] [--sync normal|full]\n');
  process.exit(0);
}
const COUNT = Number(values.count);
const COUNT_NOGROUP = Number(values['count-nogroup']);
const SECONDS = Number(values.seconds);
const WINDOW = Number(values.window);
const SYNC = values.sync === 'full' ? 'full' : 'normal';
const LIMITS = { maxMessages: 10_000_000, maxBytes: 4 * 1024 ** 3, whenFull: 'drop-oldest' } as const;

function writeBytes(): number {
  return readWriteBytes() ?? Number.NaN;
}

function message(i: number, payload: Buffer): OutboxInput {
  return { topic: `sensors/device${i % 100}/temp`, payload, qos: 1, retain: false, arrivedAt: Date.now(), source: 'bench' };
}

interface Row {
  case: string;
  messages: number;
  seconds: number;
  perSecond: number;
  commits: number;
  bytesPerMessage: number;
  bytesPerPayloadByte: number;
}

async function withOutbox<T>(flushInterval: number, fn: (o: SqliteOutbox) => Promise<T>): Promise<{ result: T; written: number; commits: number }> {
  const dir = mkdtempSync(join(values.dir ?? tmpdir(), 'edgeway-bench-outbox-'));
  try {
    const outbox = new SqliteOutbox(new SqliteStorage({ path: join(dir, 'edgeway.db'), sync: SYNC, flushInterval }), LIMITS);
    const before = writeBytes();
    await outbox.open();
    const result = await fn(outbox);
    const commits = outbox.stats().commits;
    await outbox.close();
    return { result, written: writeBytes() - before, commits };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function appendCase(name: string, payloadSize: number, count: number, flushInterval: number): Promise<Row> {
  const payload = Buffer.alloc(payloadSize, 0x61);
  const { result, written, commits } = await withOutbox(flushInterval, async (outbox) => {
    const deadline = performance.now() + SECONDS * 1000;
    const start = performance.now();
    let inflight: Promise<unknown>[] = [];
    let n = 0;
    while (n < count && performance.now() < deadline) {
      inflight.push(outbox.append([message(n, payload)]));
      n++;
      if (inflight.length >= WINDOW) {
        await Promise.all(inflight);
        inflight = [];
      }
    }
    await Promise.all(inflight);
    return { n, seconds: (performance.now() - start) / 1000 };
  });
  return {
    case: name,
    messages: result.n,
    seconds: result.seconds,
    perSecond: result.n / result.seconds,
    commits,
    bytesPerMessage: written / result.n,
    bytesPerPayloadByte: written / (result.n * payloadSize),
  };
}

async function readAckCase(count: number): Promise<Row> {
  const payload = Buffer.alloc(64, 0x61);
  const { result, commits } = await withOutbox(50, async (outbox) => {
    const fills: Promise<unknown>[] = [];
    for (let i = 0; i < count; i += 1000) {
      fills.push(outbox.append(Array.from({ length: Math.min(1000, count - i) }, (_, k) => message(i + k, payload))));
    }
    await Promise.all(fills);
    const deadline = performance.now() + SECONDS * 1000;
    const start = performance.now();
    let cursor = 0;
    let n = 0;
    let last: Promise<void> = Promise.resolve();
    // Pipelined like the uplink: read the next batch while the previous ack waits for its commit.
    for (;;) {
      const batch = outbox.read(cursor, 1000);
      if (batch.length === 0 || performance.now() > deadline) break;
      cursor = (batch[batch.length - 1] as { seq: number }).seq;
      n += batch.length;
      last = outbox.ack(cursor);
      await new Promise<void>((r) => setImmediate(r));
    }
    await last;
    if (outbox.stats().size !== count - n) throw new Error('read-and-ack left the wrong number of rows');
    return { n, seconds: (performance.now() - start) / 1000 };
  });
  return { case: 'read 1000 + ack (64 B)', messages: result.n, seconds: result.seconds, perSecond: result.n / result.seconds, commits, bytesPerMessage: Number.NaN, bytesPerPayloadByte: Number.NaN };
}

function fmt(n: number, digits = 0): string {
  return Number.isFinite(n) ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits }) : '—';
}

async function main(): Promise<void> {
  const rows: Row[] = [];
  rows.push(await appendCase('append 64 B, group commit (50 ms)', 64, COUNT, 50));
  rows.push(await appendCase('append 1 KB, group commit (50 ms)', 1024, Math.ceil(COUNT / 4), 50));
  rows.push(await appendCase('append 64 B, commit per append (0)', 64, COUNT_NOGROUP, 0));
  rows.push(await appendCase('append 1 KB, commit per append (0)', 1024, COUNT_NOGROUP, 0));
  rows.push(await readAckCase(COUNT));
  const lines = [
    `SqliteOutbox, sync ${SYNC}, dir ${values.dir}, node ${process.version}, one message per append() call, window ${WINDOW}`,
    '',
    '| case | messages | s | msg/s | commits | disk bytes/msg | disk bytes/payload byte |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...rows.map((r) => `| ${r.case} | ${fmt(r.messages)} | ${fmt(r.seconds, 2)} | ${fmt(r.perSecond)} | ${fmt(r.commits)} | ${fmt(r.bytesPerMessage)} | ${fmt(r.bytesPerPayloadByte, 2)} |`),
  ];
  process.stdout.write(`${lines.join('\n')}\n`);
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
