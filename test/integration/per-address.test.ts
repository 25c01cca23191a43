/**
 * Per source address caps (issue 8, limits.perAddress) against a real broker over real sockets:
 * concurrent connections and the connection-rate token bucket, with `exemptLoopback: false` so
 * loopback addresses stand for LAN devices (on Linux all of 127/8 is local: 127.0.0.2 and
 * 127.0.0.3 are two "machines"). A refused connection is closed at accept, before anything is
 * read: no CONNACK.
 */
import t, { type Test } from 'tap';
import { startBroker, waitFor, type TestBroker } from '../helpers/broker';
import { RawClient } from '../helpers/raw-client';

async function setup(t: Test, perAddress: Record<string, unknown>): Promise<{ tb: TestBroker; connect: (from: string) => Promise<RawClient>; refused: (from: string) => Promise<boolean> }> {
  const tb = await startBroker({ limits: { perAddress } });
  const clients: RawClient[] = [];
  t.teardown(async () => {
    for (const c of clients) c.destroy();
    await tb.stop();
  });
  let n = 0;
  const connect = async (from: string): Promise<RawClient> => {
    const { client, connack } = await RawClient.open(tb.port, { clientId: `c${++n}` }, from);
    clients.push(client);
    if (connack.returnCode !== 0) throw new Error(`CONNACK ${connack.returnCode}`);
    return client;
  };
  /** Opens a socket from `from` and sends CONNECT: true if it is closed with nothing sent back. */
  const refused = async (from: string): Promise<boolean> => {
    const client = await RawClient.connectSocket(tb.port, 4, from);
    clients.push(client);
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `r${++n}`, keepalive: 0 });
    try {
      await client.next('connack', 3000);
      return false; // accepted
    } catch {
      return client.closed && client.received.length === 0;
    }
  };
  return { tb, connect, refused };
}

t.test('perAddress.maxConnections: the connection beyond the cap is closed at accept; other addresses are unaffected', async (t) => {
  const { tb, connect, refused } = await setup(t, { maxConnections: 3, exemptLoopback: false });
  const hits = tb.broker.metrics.limitHits;
  const first = [await connect('127.0.0.2'), await connect('127.0.0.2'), await connect('127.0.0.2')];
  t.equal(tb.broker.addressLimits.openFrom('127.0.0.2'), 3);
  const accepted = tb.broker.metrics.connectionsAccepted;
  t.ok(await refused('127.0.0.2'), 'the 4th connection from 127.0.0.2 is closed without CONNACK');
  t.equal(hits.perAddressConnections, 1, 'counted (perAddressConnections)');
  t.equal(tb.broker.metrics.connectionsAccepted, accepted, 'not counted as accepted');

  for (let i = 0; i < 3; i++) await connect('127.0.0.3');
  t.pass('127.0.0.3 opens its own 3 connections meanwhile');
  first[0]?.send({ cmd: 'pingreq' });
  t.equal((await (first[0] as RawClient).next('pingresp')).cmd, 'pingresp', 'the connections already open are unaffected');

  first[0]?.disconnect();
  first[1]?.destroy();
  await waitFor(() => tb.broker.addressLimits.openFrom('127.0.0.2') === 1, 3000, 'the closes to be counted');
  await connect('127.0.0.2');
  await connect('127.0.0.2');
  t.pass('after two closed, two new connections from 127.0.0.2 are accepted');
  t.ok(await refused('127.0.0.2'), 'and the next one is refused again');
  t.equal(hits.perAddressConnections, 2);
  t.equal(tb.broker.addressLimits.openFrom('127.0.0.3'), 3);
});

t.test('perAddress rate: beyond connectionBurst, connections are closed until the bucket refills', async (t) => {
  const { tb, connect, refused } = await setup(t, { connectionsPerSecond: 5, connectionBurst: 4, exemptLoopback: false });
  const hits = tb.broker.metrics.limitHits;
  for (let i = 0; i < 4; i++) (await connect('127.0.0.4')).disconnect();
  t.ok(await refused('127.0.0.4'), 'the 5th connection in a burst is closed without CONNACK');
  t.equal(hits.perAddressRate, 1, 'counted (perAddressRate)');
  (await connect('127.0.0.5')).disconnect();
  t.pass('127.0.0.5 is unaffected');

  // 5 per second: a token comes back within 200 ms; refused attempts take none.
  const deadline = Date.now() + 3000;
  let ok = false;
  while (!ok && Date.now() < deadline) {
    ok = !(await refused('127.0.0.4'));
    if (!ok) await new Promise((r) => setTimeout(r, 40));
  }
  t.ok(ok, `127.0.0.4 is accepted again once the bucket refilled (after ${hits.perAddressRate - 1} more refusals)`);
});

t.test('exemptLoopback (the default): loopback addresses are neither capped nor tracked', async (t) => {
  const { tb, connect } = await setup(t, { maxConnections: 2, connectionsPerSecond: 1, connectionBurst: 2 });
  for (let i = 0; i < 10; i++) await connect(i % 2 === 0 ? '127.0.0.2' : '127.0.0.1');
  t.equal(tb.broker.clients.size, 10, 'all 10 connected');
  t.equal(tb.broker.metrics.limitHits.perAddressConnections + tb.broker.metrics.limitHits.perAddressRate, 0, 'no limit hit');
  t.equal(tb.broker.addressLimits.tracked, 0, 'no address tracked');
});
