import type { ISubscribePacket } from 'mqtt-packet';
import type { Broker } from '../broker';
import type { Connection } from '../connection';
import { encodePacket } from '../encode';
import { ReasonCode } from '../errors';
import { encodeV5 } from '../mqtt5';
import { subscriptionFilterError } from '../topic';
import type { QoS, SubscriptionOptions } from '../types';

const SUBACK_FAILURE = 0x80;

/**
 * SUBSCRIBE (3.1.1 section 3.8, MQTT 5.0 section 3.8). The granted QoS is the requested one
 * [MQTT-3.8.4-6]; a filter already subscribed is replaced and its retained messages are sent
 * again [MQTT-3.8.4-3] — for MQTT 5 as its Retain Handling says [MQTT-3.3.1-9] [MQTT-3.3.1-10]
 * [MQTT-3.3.1-11], and never for a shared subscription. SUBACK goes out before the retained
 * messages, except for a persistent session with storage on: its SUBACK waits for the commit of
 * the subscription, and the retained messages may come first (the server may send matching
 * PUBLISHes before the SUBACK, section 3.8.4).
 *
 * `$share/{ShareName}/{filter}` is a shared subscription (section 4.8.2) for 3.1.1 clients too,
 * as in Mosquitto. A Subscription Identifier applies to every filter of the packet.
 *
 * A filter that breaks the topic rules closes the connection (MQTT 5: DISCONNECT 0x8F). One that
 * only goes beyond a limit is refused in SUBACK: 0x80 for 3.1.1, a specific reason code for MQTT 5.
 */
export function handleSubscribe(broker: Broker, conn: Connection, packet: ISubscribePacket): void {
  const session = conn.session;
  if (session === null) return;
  // [MQTT-3.8.3-3] (3.1.1), [MQTT-3.8.3-2] (MQTT 5): at least one filter. mqtt-packet parses a
  // SUBSCRIBE holding only its packet identifier (and properties) as one with an empty list, and
  // an empty SUBACK cannot be encoded: without this check the gateway crashed (found by fuzzing).
  if (packet.subscriptions.length === 0) {
    conn.close('protocol-error', 'SUBSCRIBE without a topic filter [MQTT-3.8.3-3]');
    return;
  }
  const maxLevels = broker.limits.maxTopicLevels;
  const changesBefore = broker.storageChanges;
  const v5 = conn.mqtt5 !== null;
  const subscriptionId = v5 ? packet.properties?.subscriptionIdentifier : undefined;

  const granted: number[] = [];
  const refusals: string[] = [];
  const accepted: [string, SubscriptionOptions][] = [];
  for (const sub of packet.subscriptions) {
    const invalid = subscriptionFilterError(sub.topic, maxLevels);
    if (invalid !== null) {
      if (invalid.kind === 'too-many-levels') {
        broker.limitHit('maxTopicLevels', v5 ? 'SUBSCRIBE filter has too many levels; refused' : 'SUBSCRIBE filter has too many levels; client disconnected', { clientId: conn.clientId, maxTopicLevels: maxLevels });
        if (v5) {
          granted.push(ReasonCode.TopicFilterInvalid);
          refusals.push(`${sub.topic}: ${invalid.message}`);
          continue;
        }
      }
      conn.close('protocol-error', `invalid topic filter ${JSON.stringify(sub.topic)} in SUBSCRIBE: ${invalid.message}`, false, ReasonCode.TopicFilterInvalid);
      return;
    }
    const shared = sub.topic.startsWith('$share/');
    if (shared && sub.nl === true) {
      conn.close('protocol-error', `No Local on the shared subscription ${JSON.stringify(sub.topic)} [MQTT-3.8.3-4]`);
      return;
    }
    // Authorisation (an ACL): refused for this filter only.
    const client = session.client;
    if (broker.hooks.authorizeSubscribe.length > 0 && client !== null && !broker.maySubscribe(client, sub.topic)) {
      granted.push(v5 ? ReasonCode.NotAuthorized : SUBACK_FAILURE);
      refusals.push(`${sub.topic}: not authorized`);
      continue;
    }
    if (!session.subscriptions.has(sub.topic) && session.subscriptions.size >= broker.limits.maxSubscriptionsPerClient) {
      broker.limitHit('maxSubscriptionsPerClient', 'subscription refused: client has too many', { clientId: conn.clientId, filter: sub.topic, maxSubscriptionsPerClient: broker.limits.maxSubscriptionsPerClient });
      granted.push(v5 ? ReasonCode.QuotaExceeded : SUBACK_FAILURE);
      refusals.push(`${sub.topic}: more than ${broker.limits.maxSubscriptionsPerClient} subscriptions`);
      continue;
    }
    const options: SubscriptionOptions = {
      qos: sub.qos as QoS,
      noLocal: sub.nl ?? false,
      retainAsPublished: sub.rap ?? false,
      retainHandling: (sub.rh ?? 0) as 0 | 1 | 2,
      ...(subscriptionId === undefined ? {} : { subscriptionId }),
    };
    const existed = session.subscriptions.has(sub.topic);
    broker.subscribe(session, sub.topic, options);
    granted.push(options.qos);
    if (!shared && (options.retainHandling === 0 || (options.retainHandling === 1 && !existed))) accepted.push([sub.topic, options]);
  }
  const messageId = packet.messageId ?? 0;
  const suback =
    conn.mqtt5 === null
      ? encodePacket({ cmd: 'suback', messageId, granted }, conn.protocolVersion)
      : encodeV5(conn.mqtt5, { cmd: 'suback', messageId, granted, properties: refusals.length === 0 ? undefined : conn.mqtt5.reason(refusals.join('; ')) });
  // A persistent session's subscriptions are acknowledged once stored (Broker.durableSince).
  conn.sendAck(suback, broker.durableSince(changesBefore));
  for (const [filter, options] of accepted) broker.sendRetained(session, filter, options);
}
