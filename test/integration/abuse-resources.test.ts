/**
 * Abuse resistance of the real `edgeway` process (issue 8): what a hostile or broken device on
 * the LAN can make the gateway hold. Measured on the gateway child itself — its VmRSS from
 * /proc/<pid>/status, its counters from /metrics and $SYS — not inside the test process.
 * The memory checks compare before and after within generous bounds (resource bounds, not timing
 * thresholds), each designed so that the memory WOULD grow by far more if the limit were missing.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import t, { type Test } from 'tap';
import { eventually, mb, startMeteredGateway, type MeteredGateway as Gateway } from '../helpers/metered-gateway';
import { within } from '../helpers/mqtt-client';
import { RawClient, varInt } from '../helpers/raw-client';

const dir = mkdtempSync(join(tmpdir(), 'edgeway-abuse-'));
t.teardown(() => rmSync(dir, { recursive: true, force: true }));

/** Starts `edgeway` with `limits` (YAML flow mapping) on free loopback ports, with /metrics on. */
const startGateway = (t: Test, limits: string, sysInterval = 0): Promise<Gateway> => startMeteredGateway(t, dir, limits, { sysInterval });

t.test('a socket that sends nothing is closed after connectTimeout, counted in /metrics and $SYS', async (t) => {
  const gw = await startGateway(t, '{ connectTimeout: 300 }', 1);
  const started = Date.now();
  const idle = await RawClient.connectSocket(gw.port);
  await idle.waitClosed(5000);
  t.ok(Date.now() - started >= 250, `closed after the timeout, not before (${Date.now() - started} ms)`);
  t.same(idle.received, [], 'nothing was sent to it');
  t.equal((await gw.limitHits()).connectTimeout, 1, 'edgeway_limit_hits_total{limit="connectTimeout"} 1');

  const sys = await RawClient.connect(gw.port, { clientId: 'sys' });
  t.teardown(() => sys.destroy());
  sys.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '$SYS/broker/limits/+', qos: 0 }] });
  const values = new Map<string, string>();
  const names = ['connectTimeout', 'perAddressConnections', 'perAddressRate', 'loginFailures', 'loginDelayed', 'loginQueueFull'];
  while (names.some((n) => !values.has(`$SYS/broker/limits/${n}`))) {
    const p = await sys.next('publish', 3000);
    values.set(p.topic, p.payload.toString());
  }
  // Published once a second: the count may reach $SYS a tick after the close.
  while (values.get('$SYS/broker/limits/connectTimeout') !== '1') {
    const p = await sys.next('publish', 3000);
    values.set(p.topic, p.payload.toString());
  }
  t.pass('$SYS/broker/limits/connectTimeout is 1');
  t.same(
    names.slice(1).map((n) => values.get(`$SYS/broker/limits/${n}`)),
    names.slice(1).map(() => '0'),
    'the per-address and login counters are published too',
  );
});

/**
 * 40 connections each announce a 10 MB PUBLISH and then trickle 900 KB of its body (under the
 * 1 MiB limit, so only the announced length can give them away). Without the check on the fixed
 * header the gateway would buffer 40 × 900 KB = 36 MB; with it, each is closed as soon as the
 * header is read. Returns the gateway's RSS growth and how many connections it closed.
 */
async function announceHugePackets(gw: Gateway): Promise<{ growth: number; closed: number; sentBody: number }> {
  const connections = 40;
  const bodyPerConnection = 900 * 1024;
  const chunk = Buffer.alloc(64 * 1024, 0x61);
  const clients = await Promise.all(Array.from({ length: connections }, (_, i) => RawClient.connect(gw.port, { clientId: `huge-${gw.pid}-${i}` })));
  const before = gw.rss();
  let peak = before;
  let sentBody = 0;
  await Promise.all(
    clients.map(async (c) => {
      // PUBLISH QoS 0, remaining length 10 MB, then the start of its topic.
      c.sendBytes(Buffer.concat([Buffer.from([0x30]), varInt(10_000_000), Buffer.from([0, 5]), Buffer.from('big/x')]));
      for (let sent = 0; sent < bodyPerConnection && !c.closed && !c.socket.destroyed; sent += chunk.length) {
        // A trickle: one chunk at a time, each after the previous left our socket.
        await new Promise<void>((resolve) => c.socket.write(chunk, () => resolve()));
        sentBody += chunk.length;
        await new Promise((r) => setTimeout(r, 5));
      }
    }),
  );
  // Let the gateway read what is in flight, then measure.
  await new Promise((r) => setTimeout(r, 300));
  peak = Math.max(peak, gw.rss());
  const closed = clients.filter((c) => c.closed).length;
  for (const c of clients) c.destroy();
  return { growth: peak - before, closed, sentBody };
}

t.test('a 10-MB packet header against a 1-MiB limit: closed when the header is read, RSS stays flat', async (t) => {
  const gw = await startGateway(t, '{ maxPacketSize: 1MiB }');

  // One announcer waits after the header: the gateway closes it without any of the body.
  const lone = await RawClient.connect(gw.port, { clientId: 'lone' });
  lone.sendBytes(Buffer.concat([Buffer.from([0x30]), varInt(10_000_000), Buffer.from([0, 5]), Buffer.from('big/x'), Buffer.alloc(10, 0x61)]));
  await lone.waitClosed(3000);
  t.pass('closed after the fixed header and 17 bytes, with 10 MB announced');

  const enforced = await announceHugePackets(gw);
  t.comment(`limit enforced: RSS growth ${mb(enforced.growth)}, ${enforced.closed} of 40 closed, ${mb(enforced.sentBody)} of body written before the closes were seen`);
  t.equal(enforced.closed, 40, 'every announcer was closed');
  t.ok(enforced.growth < 10e6, `the gateway's RSS stayed flat (grew ${mb(enforced.growth)})`);
  const hits = await gw.limitHits();
  t.equal(hits.maxPacketSize, 41, 'each counted (maxPacketSize)');

  // Control: the same against a gateway whose limit is above 10 MB shows what buffering costs,
  // so the check above can fail.
  const control = await startGateway(t, '{ maxPacketSize: 16MiB }');
  const unlimited = await announceHugePackets(control);
  t.comment(`control (16 MiB limit): RSS growth ${mb(unlimited.growth)}, ${unlimited.closed} of 40 closed`);
  t.equal(unlimited.closed, 0, 'control: nothing closed');
  t.ok(unlimited.growth > 20e6, `control: buffering the bodies shows in RSS (grew ${mb(unlimited.growth)})`);
});

t.test('subscribers that never read cannot make the gateway buffer without bound; a reading subscriber gets everything', async (t) => {
  // The default limits: maxOutgoingBytes 1 MiB, maxQueued 1000 / maxQueuedBytes 16 MiB, backpressureTimeout 1 s.
  const gw = await startGateway(t, '{}');
  // Two subscribers to '#' that never read: QoS 0, and QoS 1 that never acknowledges.
  const slow0 = await RawClient.connect(gw.port, { clientId: 'slow0' });
  const slow1 = await RawClient.connect(gw.port, { clientId: 'slow1' });
  t.teardown(() => {
    slow0.destroy();
    slow1.destroy();
  });
  slow0.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 0 }] });
  slow1.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: '#', qos: 1 }] });
  await slow0.next('suback');
  await slow1.next('suback');
  slow0.socket.pause();
  slow1.socket.pause();

  const url = `mqtt://127.0.0.1:${gw.port}`;
  const clients: MqttClient[] = [];
  t.teardown(() => Promise.all(clients.map((c) => within(c.endAsync(true), 'mqtt.js end').catch(() => undefined))));
  const good = await connectAsync(url, { clientId: 'good', reconnectPeriod: 0, connectTimeout: 3000 }, false);
  clients.push(good);
  const messages = Number(process.env.ABUSE_MESSAGES ?? 3200);
  const payloadSize = 64 * 1024; // 3200 × 64 KiB ≈ 210 MB
  let received = 0;
  let outOfOrder = 0;
  good.on('message', (_topic, payload) => {
    if (payload.readUInt32BE(0) !== received) outOfOrder++;
    received++;
  });
  await within(good.subscribeAsync('#', { qos: 1 }), 'subscribe');
  const publisher = await connectAsync(url, { clientId: 'publisher', reconnectPeriod: 0, connectTimeout: 3000 }, false);
  clients.push(publisher);

  const before = gw.rss();
  let peak = before;
  const sampler = setInterval(() => (peak = Math.max(peak, gw.rss())), 50);
  t.teardown(() => clearInterval(sampler));
  const started = Date.now();
  // QoS 1 with at most 16 unacknowledged, each message numbered for the order check.
  let next = 0;
  await new Promise<void>((resolve, reject) => {
    let inflight = 0;
    const pump = (): void => {
      while (inflight < 16 && next < messages) {
        const payload = Buffer.alloc(payloadSize, 0x70);
        payload.writeUInt32BE(next++, 0);
        inflight++;
        publisher.publish(`flood/${next % 10}`, payload, { qos: 1 }, (err) => {
          if (err) return reject(err);
          inflight--;
          if (next === messages && inflight === 0) resolve();
          else pump();
        });
      }
    };
    pump();
  });
  await eventually(() => received === messages, 30_000, 'the reading subscriber to get every message');
  clearInterval(sampler);
  peak = Math.max(peak, gw.rss());
  const seconds = (Date.now() - started) / 1000;
  const hits = await gw.limitHits();
  const [outgoingHits, queuedHits] = [hits.maxOutgoingBytes ?? 0, hits.maxQueued ?? 0];
  const dropped = await gw.metric('edgeway_messages_dropped_total');
  t.comment(
    `${messages} × 64 KiB (${mb(messages * payloadSize)}) in ${seconds.toFixed(1)} s; gateway RSS ${mb(before)} → peak ${mb(peak)} (+${mb(peak - before)}); ` +
      `dropped ${dropped}, maxOutgoingBytes hits ${outgoingHits}, maxQueued hits ${queuedHits}, backpressure pauses ${hits.backpressurePauses}`,
  );
  t.equal(received, messages, 'the reading QoS 1 subscriber received every message');
  t.equal(outOfOrder, 0, 'in order');
  t.ok(outgoingHits > 0, 'QoS 0 messages to the stuck subscriber were dropped (maxOutgoingBytes)');
  t.ok(queuedHits > 0, 'QoS 1 messages beyond the stuck subscriber’s queue were dropped (maxQueued / maxQueuedBytes)');
  t.ok(dropped >= outgoingHits + queuedHits, 'drops counted in edgeway_messages_dropped_total');
  // Unbounded, the two stuck subscribers would hold 2 × 210 MB; the limits allow about
  // maxOutgoingBytes (1 MiB) + maxQueuedBytes (16 MiB) + socket buffers, plus the garbage of the flood.
  t.ok(peak - before < 150e6, `the gateway's RSS stayed bounded (grew ${mb(peak - before)}, unbounded would be > 400 MB)`);
  t.equal(slow0.closed || slow1.closed, false, 'the stuck subscribers are not disconnected (their limits drop, they do not kick)');
});
