/**
 * The bridge's state machine over binding-mock (SerialPortMock, injected through the opener):
 * no side effects before start, readings and status through the broker context, missing ports,
 * lost ports, an open() that never answers, stop. Real ptys are the integration tests' job.
 */
import { EventEmitter } from 'node:events';
import t, { type Test } from 'tap';
import { SerialPortMock } from 'serialport';
import { SerialAdapter, type PortHandle, type PortOpener, type SerialPortOptions } from '../../adapters/serial';
import { validateConfig } from '../../config/load';
import { Broker, type Message } from '../../gateway/broker';
import { waitFor } from '../helpers/broker';
import { memoryLogger } from '../helpers/serial';

const MockBinding = SerialPortMock.binding;

function portOptions(spec: Record<string, unknown>): SerialPortOptions {
  const [p] = validateConfig({ serial: [{ name: 'm', path: '/dev/mock0', reconnect: { initialDelay: 10, maxDelay: 100 }, statusInterval: 0, ...spec }] }, 'test').serial;
  if (p === undefined) throw new Error('no port');
  return p;
}

function setup(t: Test, spec: Record<string, unknown>, opener?: PortOpener, brokerConfig: Record<string, unknown> = {}) {
  MockBinding.reset();
  const full = validateConfig(brokerConfig, 'test');
  const { logger, lines } = memoryLogger();
  const broker = new Broker({ limits: full.limits, sysInterval: 0, version: 'test' }, logger);
  const seen: Message[] = [];
  broker.context('observer').subscribe('#', (m) => seen.push(m));
  const ports: SerialPortMock[] = [];
  const mockOpener: PortOpener = (s) => {
    const p = new SerialPortMock({ path: s.path, baudRate: s.baudRate, autoOpen: false });
    ports.push(p);
    return p;
  };
  const adapter = new SerialAdapter(broker.context('serial'), [portOptions(spec)], {
    gatewayId: 'gw',
    version: 'test',
    opener: opener ?? mockOpener,
    random: () => 0.5,
    openTimeoutMs: 100,
  });
  t.teardown(() => adapter.stop(1000));
  const status = () => {
    const s = adapter.status()[0];
    if (s === undefined) throw new Error('no status');
    return s;
  };
  const lastStatus = () => {
    const m = [...seen].reverse().find((x) => x.topic === 'edgeway/serial/m/status');
    return m === undefined ? undefined : (JSON.parse(m.payload.toString()) as Record<string, unknown>);
  };
  return { broker, adapter, seen, ports, lines, status, lastStatus };
}

t.test('constructor has no side effects; start opens, reads and reports', async (t) => {
  let calls = 0;
  const counting: PortOpener = (s) => {
    calls++;
    return new SerialPortMock({ path: s.path, baudRate: s.baudRate, autoOpen: false });
  };
  const f = setup(t, { format: 'json', write: 'cmd/{name}' }, counting);
  MockBinding.createPort('/dev/mock0', { record: true });
  t.equal(calls, 0, 'nothing opened by the constructor');
  t.equal(f.broker.subscriptions.size, 1, 'no subscription by the constructor (only the observer)');
  t.equal(f.seen.length, 0, 'nothing published');
  await f.adapter.start();
  await f.adapter.start();
  t.equal(calls, 1, 'start is idempotent');
  t.equal(f.broker.subscriptions.size, 2, 'write topic subscribed');
  t.equal(f.lastStatus()?.state, 'online');
  t.equal(f.broker.retained.get('edgeway/serial/m/status')?.retain, true, 'status retained');
});

t.test('readings from the mock binding go through the broker', async (t) => {
  const f = setup(t, { format: 'kv', wrap: true });
  MockBinding.createPort('/dev/mock0', { record: true });
  await f.adapter.start();
  const port = f.ports[0]?.port;
  if (port === undefined) throw new Error('not open');
  const before = Date.now();
  port.emitData('temp=21.5 hum=40\r\n');
  await waitFor(() => f.seen.some((m) => m.topic === 'sensors/m/hum'), 2000, 'the readings');
  const temp = f.seen.find((m) => m.topic === 'sensors/m/temp');
  const parsed = JSON.parse(temp?.payload.toString() ?? '{}') as { value: number; ts: number };
  t.equal(parsed.value, 21.5);
  t.ok(parsed.ts >= before && parsed.ts <= Date.now(), 'arrival timestamp');
  t.equal(f.status().linesRead, 1);
  t.equal(f.status().messagesPublished, 2);
});

t.test('a line nested too deeply for JSON.stringify is dropped and the next line published', async (t) => {
  const f = setup(t, { format: 'json', maxLineLength: 65_536 });
  MockBinding.createPort('/dev/mock0', { record: true });
  await f.adapter.start();
  const port = f.ports[0]?.port;
  if (port === undefined) throw new Error('not open');
  const depth = 30_000;
  port.emitData(`{"a":${'['.repeat(depth)}${']'.repeat(depth)}}\n{"ok":1}\n`);
  await waitFor(() => f.seen.some((m) => m.topic === 'sensors/m/ok'), 2000, 'the next good line');
  t.equal(f.status().linesDropped.parse, 1, 'counted as a parse drop');
  t.notOk(f.seen.some((m) => m.topic === 'sensors/m/a'), 'nothing published for the deep line');
});

t.test('write path over the mock binding', async (t) => {
  const f = setup(t, { format: 'raw', write: 'cmd/{name}', delimiter: '\r\n' });
  MockBinding.createPort('/dev/mock0', { record: true });
  await f.adapter.start();
  const ctx = f.broker.context('client');
  ctx.publish({ topic: 'cmd/m', payload: Buffer.from('LED=1'), qos: 0, retain: false });
  ctx.publish({ topic: 'cmd/m', payload: Buffer.from('LED=0'), qos: 0, retain: false });
  ctx.publish({ topic: 'cmd/m', payload: Buffer.alloc(0), qos: 0, retain: true });
  await waitFor(() => f.status().writes.sent === 2, 2000, 'two writes');
  t.equal(f.ports[0]?.port?.recording.toString(), 'LED=1\r\nLED=0\r\n', 'one write at a time, in order, with the delimiter');
  t.same(f.status().writes, { sent: 2, queued: 0, dropped: 0, failed: 0 }, 'an empty payload (clearing a retained command) is not written');
});

t.test('statusInterval: counters re-published while they change, not when idle', async (t) => {
  const f = setup(t, { format: 'raw', statusInterval: 1 });
  MockBinding.createPort('/dev/mock0');
  await f.adapter.start();
  const statuses = () => f.seen.filter((m) => m.topic === 'edgeway/serial/m/status').length;
  t.equal(statuses(), 1, 'online published at start');
  f.ports[0]?.port?.emitData('x\n');
  await waitFor(() => f.lastStatus()?.linesRead === 1, 3000, 'a periodic status with the new counter');
  const n = statuses();
  await new Promise((r) => setTimeout(r, 1300));
  t.equal(statuses(), n, 'nothing changed, nothing re-published');
});

t.test('missing at start: offline with the error, retried, picked up; logged once', async (t) => {
  const f = setup(t, { format: 'raw' });
  await f.adapter.start();
  t.equal(f.lastStatus()?.state, 'offline', 'offline published after the first failed attempt');
  t.match(f.lastStatus()?.lastError, /Port does not exist/);
  await waitFor(() => f.status().openAttempts >= 4, 2000, 'retries');
  t.equal(f.lines.filter((l) => l.level === 'warn').length, 1, 'one warning for the outage');
  MockBinding.createPort('/dev/mock0');
  await waitFor(() => f.status().state === 'online', 2000, 'online');
  t.equal(f.lastStatus()?.state, 'online');
  t.ok(f.lines.some((l) => l.msg === 'serial port online' && typeof l.fields?.retries === 'number' && l.fields.retries >= 3), 'coming up logged with the retry count');
  t.equal(f.status().reconnects, 0, 'a first open is not a reconnect');
});

t.test('a lost port is reopened by the same path', async (t) => {
  const f = setup(t, { format: 'raw' });
  MockBinding.createPort('/dev/mock0');
  await f.adapter.start();
  const first = f.ports[0];
  if (first === undefined) throw new Error('not open');
  first._disconnected(Object.assign(new Error('EIO: i/o error, read'), { code: 'EIO' }));
  await waitFor(() => f.lastStatus()?.state === 'offline', 2000, 'offline');
  t.match(f.lastStatus()?.lastError, /EIO/);
  await waitFor(() => f.status().state === 'online', 2000, 'online again');
  t.equal(f.ports.length, 2, 'a new port object');
  t.equal(f.ports[1]?.path, '/dev/mock0', 'same path');
  t.equal(f.status().reconnects, 1);
  f.ports[1]?.port?.emitData('after\n');
  await waitFor(() => f.seen.some((m) => m.topic === 'sensors/m' && m.payload.toString() === 'after'), 2000, 'a reading');
  first.emit('data', Buffer.from('stale\n'));
  t.notOk(f.seen.some((m) => m.payload.toString() === 'stale'), 'the old port object is ignored');
});

/** A port whose open() never answers until told to (a wedged USB device). */
class HangingPort extends EventEmitter implements PortHandle {
  isOpen = false;
  closed = 0;
  private pending: ((err: Error | null) => void) | undefined;
  open(cb: (err: Error | null) => void): void {
    this.pending = cb;
  }
  finishOpen(): void {
    this.isOpen = true;
    this.pending?.(null);
  }
  close(cb?: (err: Error | null) => void): void {
    this.isOpen = false;
    this.closed++;
    cb?.(null);
  }
  write(_data: Buffer, cb: (err: Error | null | undefined) => void): boolean {
    cb(null);
    return true;
  }
}

t.test('an open() that never answers times out, is retried, and is closed if it answers late', async (t) => {
  const hanging = new HangingPort();
  let calls = 0;
  const f = setup(t, { format: 'raw' }, (s) => {
    calls++;
    return calls === 1 ? hanging : new SerialPortMock({ path: s.path, baudRate: s.baudRate, autoOpen: false });
  });
  MockBinding.createPort('/dev/mock0');
  const started = Date.now();
  await f.adapter.start();
  t.ok(Date.now() - started < 1000, 'start is bounded by the open timeout');
  t.match(f.lastStatus()?.lastError, /open timed out after 100 ms/);
  await waitFor(() => f.status().state === 'online', 2000, 'the retry succeeds');
  hanging.finishOpen();
  t.equal(hanging.closed, 1, 'the late port is closed, not used');
  t.equal(hanging.listenerCount('data'), 0, 'and not listened to');
});

t.test('stop: idempotent, bounded, closes the port, publishes offline, no more retries', async (t) => {
  const f = setup(t, { format: 'raw', write: 'cmd/{name}' });
  MockBinding.createPort('/dev/mock0');
  await f.adapter.start();
  const port = f.ports[0];
  await Promise.all([f.adapter.stop(500), f.adapter.stop(500)]);
  await f.adapter.stop(500);
  t.equal(port?.isOpen, false, 'port closed');
  t.equal(f.lastStatus()?.state, 'offline');
  t.equal(f.broker.subscriptions.size, 1, 'write topic unsubscribed');
  const attempts = f.status().openAttempts;
  await new Promise((r) => setTimeout(r, 100));
  t.equal(f.status().openAttempts, attempts, 'no reopen');
});

t.test('stop before start: nothing opened, nothing published', async (t) => {
  const f = setup(t, { format: 'raw' });
  await f.adapter.stop(500);
  await f.adapter.start();
  t.equal(f.ports.length, 0, 'a stopped adapter does not start');
  t.equal(f.seen.length, 0);
});

t.test('stop while retrying clears the retry timer', async (t) => {
  const f = setup(t, { format: 'raw' });
  await f.adapter.start();
  await f.adapter.stop(500);
  const attempts = f.status().openAttempts;
  await new Promise((r) => setTimeout(r, 150));
  t.equal(f.status().openAttempts, attempts);
});

t.test('a line with one reading the broker would refuse is dropped whole, nothing half published', async (t) => {
  // sensors/m/{key}: 3 levels; the nested key out/deep adds one more than maxTopicLevels allows.
  const f = setup(t, { format: 'json', homeAssistant: true }, undefined, { limits: { maxTopicLevels: 4 } });
  MockBinding.createPort('/dev/mock0', { record: true });
  await f.adapter.start();
  const port = f.ports[0]?.port;
  if (port === undefined) throw new Error('not open');
  port.emitData('{"temp":20,"out":{"deep":{"x":1}}}\n{"hum":40}\n');
  await waitFor(() => f.seen.some((m) => m.topic === 'sensors/m/hum'), 2000, 'the next good line');
  t.notOk(f.seen.some((m) => m.topic === 'sensors/m/temp'), 'the valid reading of the bad line was not published either');
  t.notOk(f.seen.some((m) => m.topic.startsWith('homeassistant/') && m.topic.includes('temp')), 'no discovery for it');
  t.equal(f.status().linesDropped.invalidTopic, 1, 'the line counted once as invalidTopic');
  t.equal(f.status().messagesPublished, 1, 'only the good line was published');
});

t.test('reconfigure: unchanged ports keep running, changed ones restart, removed ones stop, added ones start', async (t) => {
  const f = setup(t, { format: 'raw' });
  MockBinding.createPort('/dev/mock0', { record: true });
  MockBinding.createPort('/dev/mock1', { record: true });
  MockBinding.createPort('/dev/mock2', { record: true });
  await f.adapter.start();
  const original = f.ports[0];
  const m = portOptions({ format: 'raw' });
  const other = (name: string, path: string, spec: Record<string, unknown> = {}): SerialPortOptions => ({ ...portOptions({ format: 'raw', ...spec }), name, path });

  const unchanged = await f.adapter.reconfigure([m, other('n', '/dev/mock1')]);
  t.same(unchanged, { added: ['n'], removed: [], changed: [] });
  t.equal(f.ports.length, 2, 'only the added port was opened');
  t.equal(original?.isOpen, true, 'the unchanged port was not touched');
  t.same(f.adapter.status().map((s) => [s.name, s.state]), [['m', 'online'], ['n', 'online']]);

  const changed = await f.adapter.reconfigure([m, other('n', '/dev/mock2')]);
  t.same(changed, { added: [], removed: [], changed: ['n'] });
  t.equal(f.ports[1]?.isOpen, false, "the changed port's old device is closed");
  t.equal(f.ports[2]?.path, '/dev/mock2', 'and the new one opened');

  const removed = await f.adapter.reconfigure([other('n', '/dev/mock2')]);
  t.same(removed, { added: [], removed: ['m'], changed: [] });
  t.equal(original?.isOpen, false, 'the removed port is closed');
  t.equal(f.lastStatus()?.state, 'offline', 'and published offline');
  t.same(f.adapter.status().map((s) => s.name), ['n']);
});
