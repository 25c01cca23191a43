/**
 * Building blocks of the MQTT 5 tests (test/integration/mqtt5-*.test.ts): a broker and RawClients
 * that end with the test, SUBSCRIBE, PUBLISH packets, and a persistent session left behind.
 */
import type { Test } from 'tap';
import type { IConnackPacket, IConnectPacket, IPublishPacket, ISubscription } from 'mqtt-packet';
import { startBroker, waitFor, type TestBroker } from './broker';
import { RawClient } from './raw-client';

/** A broker in this process for one test, stopped when the test ends. */
export async function brokerFor(t: Test, config: Record<string, unknown> = {}): Promise<TestBroker> {
  const tb = await startBroker(config);
  t.teardown(() => tb.stop());
  return tb;
}

/** Sends CONNECT (MQTT 5 unless `connect` says otherwise) and returns the client with its CONNACK, accepted or not. */
export async function open(t: Test, tb: TestBroker, connect: Partial<IConnectPacket> = {}): Promise<{ client: RawClient; connack: IConnackPacket }> {
  const opened = await RawClient.open(tb.port, { protocolVersion: 5, clientId: '', clean: true, ...connect });
  t.teardown(() => opened.client.destroy());
  return opened;
}

/** A connected RawClient (MQTT 5 unless `connect` says otherwise); throws if CONNACK refused it. */
export async function client(t: Test, tb: TestBroker, clientId: string, connect: Partial<IConnectPacket> = {}): Promise<RawClient> {
  const c = await RawClient.connect(tb.port, { protocolVersion: 5, clientId, ...connect });
  t.teardown(() => c.destroy());
  return c;
}

let nextMessageId = 1;

/** SUBSCRIBE (with a Subscription Identifier if given); resolves with the SUBACK's codes. */
export async function subscribe(c: RawClient, subscriptions: ISubscription[], subscriptionIdentifier?: number): Promise<number[]> {
  const properties = subscriptionIdentifier === undefined ? {} : { properties: { subscriptionIdentifier } };
  c.send({ cmd: 'subscribe', messageId: nextMessageId++, subscriptions, ...properties });
  return (await c.next('suback')).granted as number[];
}

/** A PUBLISH packet; `messageId` is needed for QoS 1 and 2. */
export function publishPacket(
  topic: string,
  payload: string | Buffer,
  qos: 0 | 1 | 2 = 0,
  { messageId, retain = false, properties }: { messageId?: number; retain?: boolean; properties?: IPublishPacket['properties'] } = {},
): IPublishPacket {
  return { cmd: 'publish', topic, payload: Buffer.from(payload), qos, dup: false, retain, ...(messageId === undefined ? {} : { messageId }), ...(properties === undefined ? {} : { properties }) };
}

/**
 * An MQTT 5 client with Clean Start 0 and `expiry` seconds of Session Expiry subscribes to
 * `topic` and leaves with DISCONNECT: resolves once its session is offline.
 */
export async function leaveSession(t: Test, tb: TestBroker, clientId: string, topic: string, expiry: number, qos: 0 | 1 | 2 = 1): Promise<void> {
  const c = await client(t, tb, clientId, { clean: false, properties: { sessionExpiryInterval: expiry } });
  await subscribe(c, [{ topic, qos }]);
  c.disconnect();
  await waitFor(() => tb.broker.sessions.get(clientId)?.owner === null, 3000, `${clientId} to leave`);
}
