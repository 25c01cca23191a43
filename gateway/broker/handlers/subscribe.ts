import type { ISubscribePacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodePacket } from '../encode';
import { topicFilterError } from '../topic';
import type { QoS, SubscriptionOptions } from '../types';

const SUBACK_FAILURE = 0x80;

/**
 * SUBSCRIBE (3.1.1 section 3.8). The granted QoS is the requested one [MQTT-3.8.4-6]; a filter
 * already subscribed is replaced and its retained messages are sent again [MQTT-3.8.4-3].
 * SUBACK goes out before the retained messages, except for a persistent session with storage on:
 * its SUBACK waits for the commit of the subscription, and the retained messages may come first
 * (the server may send matching PUBLISHes before the SUBACK, section 3.8.4).
 */
export function handleSubscribe(broker: Broker, conn: Connection, packet: ISubscribePacket): void {
  const session = conn.session;
  if (session === null) return;
  const maxLevels = broker.limits.maxTopicLevels;
  const changesBefore = broker.storageChanges;

  const granted: number[] = [];
  const accepted: [string, SubscriptionOptions][] = [];
  for (const sub of packet.subscriptions) {
    const invalid = topicFilterError(sub.topic, maxLevels);
    if (invalid !== null) {
      if (invalid.kind === 'too-many-levels') {
        broker.limitHit('maxTopicLevels', 'SUBSCRIBE filter has too many levels; client disconnected', { clientId: conn.clientId, maxTopicLevels: maxLevels });
      }
      conn.close('protocol-error', `invalid topic filter ${JSON.stringify(sub.topic)} in SUBSCRIBE: ${invalid.message}`);
      return;
    }
    if (!session.subscriptions.has(sub.topic) && session.subscriptions.size >= broker.limits.maxSubscriptionsPerClient) {
      broker.limitHit('maxSubscriptionsPerClient', 'subscription refused: client has too many', { clientId: conn.clientId, filter: sub.topic, maxSubscriptionsPerClient: broker.limits.maxSubscriptionsPerClient });
      granted.push(SUBACK_FAILURE);
      continue;
    }
    const options: SubscriptionOptions = {
      qos: sub.qos as QoS,
      noLocal: sub.nl ?? false,
      retainAsPublished: sub.rap ?? false,
      retainHandling: (sub.rh ?? 0) as 0 | 1 | 2,
    };
    session.setSubscription(sub.topic, options);
    broker.subscriptions.set(sub.topic, session.clientId, { session, options });
    granted.push(options.qos);
    accepted.push([sub.topic, options]);
  }
  // A persistent session's subscriptions are acknowledged once stored (Broker.durableSince).
  conn.sendAck(encodePacket({ cmd: 'suback', messageId: packet.messageId ?? 0, granted }, conn.protocolVersion), broker.durableSince(changesBefore));
  for (const [filter, options] of accepted) broker.sendRetained(session, filter, options);
}
