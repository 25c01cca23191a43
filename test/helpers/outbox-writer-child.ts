/**
 * Child process for the kill -9 durability test: appends to a SqliteOutbox as fast as it can and
 * prints one line per append whose promise resolved ("acknowledged"):
 *
 *   ok <firstSeq> <lastSeq> <firstIndex>
 *
 * Entry k of a batch has seq firstSeq + k and payload `p<firstIndex + k>`. stdout on a pipe is
 * synchronous on Linux, so a printed line was handed to the parent before any later kill.
 *
 *   node outbox-writer-child.js <db path> <flushInterval ms>
 */
import { SqliteOutbox, SqliteStorage } from '../../adapters/sqlite';

const [path, flush] = process.argv.slice(2);
if (path === undefined) throw new Error('usage: outbox-writer-child <db path> [flushInterval]');
const outbox = new SqliteOutbox(new SqliteStorage({ path, sync: 'normal', flushInterval: Number(flush ?? '5') }), {
  maxMessages: 10_000_000,
  maxBytes: 1024 ** 3,
  whenFull: 'drop-new',
});

let next = 0;
let outstanding = 0;

function appendOne(): void {
  const n = 1 + Math.floor(Math.random() * 20);
  const first = next;
  next += n;
  outstanding++;
  const batch = Array.from({ length: n }, (_, k) => ({
    topic: `sensors/kill/${(first + k) % 7}`,
    payload: Buffer.from(`p${first + k}`),
    qos: 1 as const,
    retain: false,
    arrivedAt: Date.now(),
    source: 'writer',
  }));
  outbox.append(batch).then(
    (seqs) => {
      outstanding--;
      process.stdout.write(`ok ${seqs[0]} ${seqs[seqs.length - 1]} ${first}\n`);
    },
    (err: unknown) => {
      process.stderr.write(`append failed: ${String(err)}\n`);
      process.exit(2);
    },
  );
}

function pump(): void {
  for (let i = 0; i < 20 && outstanding < 200; i++) appendOne();
  setImmediate(pump);
}

outbox.open().then(
  () => {
    process.stdout.write('ready\n');
    pump();
  },
  (err: unknown) => {
    process.stderr.write(`open failed: ${String(err)}\n`);
    process.exit(3);
  },
);
