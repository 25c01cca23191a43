/**
 * The chaos run's verdict (scripts/chaos/accounting.ts) on hand-made records: it passes a clean
 * run and catches each kind of failure the chaos script exists to find — an acknowledged message
 * lost, a duplicate, a reordering, a reading the gateway read and lost, a gap outside a fault —
 * while allowing only what its rules allow (unacknowledged messages, readings never read while
 * unplugged, readings not yet committed when the gateway was killed).
 */
import t from 'tap';
import { account, formatTables, type AccountingInput, type StreamEntry } from '../../scripts/chaos/accounting';

let nextSeq = 1;
function entry(source: string, n: number): StreamEntry {
  const seq = nextSeq++;
  return { id: `0-${seq}`, fields: { source, payload: String(n), seq: String(seq), topic: 'sensors/x' } };
}

/** A clean run: p1 sends 1..4 (all acknowledged), serial port s1 writes 1..4; all in the stream. */
function clean(): AccountingInput & { stream: StreamEntry[] } {
  nextSeq = 1;
  const mqtt = [1, 2, 3, 4].map((n) => ({ source: 'p1', n, sentAt: 1000 + n, acked: true }));
  const serial = [1, 2, 3, 4].map((n) => ({ port: 's1', n, sentAt: 1000 + n }));
  const stream = [entry('serial:s1', 1), entry('p1', 1), entry('p1', 2), entry('serial:s1', 2), entry('serial:s1', 3), entry('p1', 3), entry('serial:s1', 4), entry('p1', 4)];
  const observations = stream.map((e) => {
    const source = e.fields.source as string;
    return source.startsWith('serial:') ? { conn: 1, kind: 'serial' as const, source: source.slice(7), n: Number(e.fields.payload) } : { conn: 1, kind: 'mqtt' as const, source, n: Number(e.fields.payload) };
  });
  return { faults: [], mqtt, serial, observations, killedConnections: new Set(), notReadWindows: [], stream };
}

t.test('a clean run passes, and every message is counted once', async (t) => {
  const r = account(clean());
  t.same(r.failures, []);
  t.match(r.total.mqtt, { sent: 4, acked: 4, delivered: 4, duplicates: 0, lost: 0 });
  t.match(r.total.serial, { sent: 4, read: 4, delivered: 4, duplicates: 0, lost: 0, notRead: 0, uncommitted: 0 });
  t.match(formatTables(r), /\| \*\*total\*\* \| 4 \| 4 \| 4 \| 0 \| 0 \|/);
});

t.test('an acknowledged message missing from the stream is lost; an unacknowledged one is not', async (t) => {
  const input = clean();
  input.stream.splice(input.stream.findIndex((e) => e.fields.source === 'p1' && e.fields.payload === '2'), 1);
  const lost = account(input);
  t.equal(lost.total.mqtt.lost, 1);
  t.match(lost.failures.join('\n'), /acknowledged MQTT messages lost: 1 \(e\.g\. p1 n=2/);

  const unacked = { ...input, mqtt: input.mqtt.map((m) => (m.n === 2 ? { ...m, acked: false } : m)) };
  const allowed = account(unacked);
  t.same(allowed.failures, []);
  t.match(allowed.total.mqtt, { sent: 4, acked: 3, delivered: 3, lost: 0 });
});

t.test('a second copy is a duplicate, a lower number after a higher one is out of order', async (t) => {
  const input = clean();
  input.stream.push(entry('p1', 3));
  const r = account(input);
  t.equal(r.total.mqtt.duplicates, 1);
  t.equal(r.outOfOrder, 1);
  t.match(r.failures.join('\n'), /duplicates: 1/);
  t.match(r.failures.join('\n'), /out of order: 1/);
});

t.test('entries nobody sent, and a seq field that differs from the id, fail the run', async (t) => {
  const input = clean();
  input.stream.push(entry('p1', 99));
  input.stream.push({ id: '0-500', fields: { source: 'p1', payload: 'garbage', seq: '500' } });
  input.stream.push({ id: '0-501', fields: { source: 'serial:s1', payload: '4', seq: '7' } });
  const r = account(input);
  t.equal(r.unexpected, 2);
  t.match(r.failures.join('\n'), /unexpected entries \(never sent\): 2/);
  t.match(r.failures.join('\n'), /seq field differs from the entry id: 1 \(e\.g\. 0-501: seq=7\)/);
});

t.test('a serial reading never seen is allowed only inside a not-read window of its port', async (t) => {
  const input = clean();
  const gone = (i: AccountingInput): AccountingInput => ({
    ...i,
    stream: i.stream.filter((e) => !(e.fields.source === 'serial:s1' && e.fields.payload === '3')),
    observations: i.observations.filter((o) => !(o.kind === 'serial' && o.n === 3)),
  });
  const outside = account(gone(input));
  t.equal(outside.total.serial.lost, 1, 'a gap with no fault is a loss');
  t.match(outside.failures.join('\n'), /serial readings lost \(never seen, outside an unplug or gateway-down window\): 1/);

  const otherPort = account(gone({ ...input, notReadWindows: [{ port: 's2', start: 0, end: 5000, lastSeen: 0 }] }));
  t.equal(otherPort.total.serial.lost, 1, "another port's unplug explains nothing");

  const inside = account(gone({ ...input, notReadWindows: [{ port: 's1', start: 1002, end: 1003, lastSeen: 4 }] }));
  t.same(inside.failures, []);
  t.match(inside.total.serial, { sent: 4, read: 3, delivered: 3, notRead: 1, lost: 0 });

  // Written (at 1003) before the fault began (1004): allowed only as part of the unseen tail.
  const tail = account(gone({ ...input, notReadWindows: [{ port: 's1', start: 1004, end: 2000, lastSeen: 2 }] }));
  t.same(tail.failures, [], 'after the last reading seen before the fault: maybe still on the wire');
  t.equal(tail.total.serial.notRead, 1);
  const beforeSeen = account(gone({ ...input, notReadWindows: [{ port: 's1', start: 1004, end: 2000, lastSeen: 4 }] }));
  t.equal(beforeSeen.total.serial.lost, 1, 'a gap before a reading that was seen is a loss');
  const afterEnd = account(gone({ ...input, notReadWindows: [{ port: 's1', start: 900, end: 1002, lastSeen: 0 }] }));
  t.equal(afterEnd.total.serial.lost, 1, 'written after the port was seen online again: must be read');
});

t.test('a reading the observer saw must be in the stream, unless the gateway was killed before it was committed', async (t) => {
  const input = clean();
  // s1 n=4 is seen, then p1 n=4 (acknowledged) on the same connection: committed.
  const withoutLast = { ...input, stream: input.stream.filter((e) => !(e.fields.source === 'serial:s1' && e.fields.payload === '4')) };
  const committed = account({ ...withoutLast, killedConnections: new Set([1]) });
  t.equal(committed.total.serial.lost, 1, 'followed by an acknowledged message: committed, so lost even though the gateway was killed');
  t.match(committed.failures.join('\n'), /read by the gateway, not in the stream\): 1 \(e\.g\. serial:s1 n=4 written at [^)]*, committed/);

  // Without an acknowledged message after it, and the connection ended by kill -9: uncommitted.
  const lastUnacked = { ...withoutLast, mqtt: withoutLast.mqtt.map((m) => (m.n === 4 ? { ...m, acked: false } : m)) };
  const killed = account({ ...lastUnacked, killedConnections: new Set([1]) });
  t.same(killed.failures, []);
  t.match(killed.total.serial, { read: 4, delivered: 3, uncommitted: 1, lost: 0 });

  const notKilled = account(lastUnacked);
  t.equal(notKilled.total.serial.lost, 1, 'no kill: a reading the gateway read must arrive');
});

t.test('messages are counted in the window of the fault they were sent during', async (t) => {
  const input = { ...clean(), faults: [{ kind: 'redis-pause' as const, start: 1002, end: 1003, detail: '' }] };
  const r = account(input);
  t.same(
    r.rows.map((row) => [row.window, row.faults, row.mqtt.sent, row.serial.sent]),
    [
      ['none', 0, 2, 2],
      ['redis-pause', 1, 2, 2],
    ],
  );
  t.equal(r.total.faults, 1);
});
