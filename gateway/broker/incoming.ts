import { isUtf8 } from 'node:buffer';
import { ReasonCode } from './errors';
import type { PropertyProblem } from './properties';
import { topicNameError } from './topic';
import type { Message, PublishProperties, QoS } from './types';

/**
 * What the broker keeps of an MQTT 5 application message's properties (PUBLISH, or a will in
 * CONNECT), section 3.3.2.3: all of them, to be forwarded unchanged, except the Topic Alias,
 * which belongs to the connection it came on [MQTT-3.3.2-7]. Two are checked: a Payload Format
 * Indicator of 1 promises UTF-8 (0x99 when the payload is not), and a Response Topic must be a
 * topic name without wildcards [MQTT-3.3.2-14] (0x82).
 */
export function keptProperties(payload: Buffer, properties: PublishProperties | undefined): PublishProperties | undefined | PropertyProblem {
  if (properties === undefined) return undefined;
  if (properties.payloadFormatIndicator === true && !isUtf8(payload)) {
    return { reasonCode: ReasonCode.PayloadFormatInvalid, detail: 'the Payload Format Indicator says UTF-8, but the payload is not' };
  }
  const responseTopic = properties.responseTopic;
  if (responseTopic !== undefined) {
    const invalid = topicNameError(responseTopic, Number.MAX_SAFE_INTEGER);
    if (invalid !== null) return { reasonCode: ReasonCode.ProtocolError, detail: `invalid Response Topic: ${invalid.message}` };
  }
  if (properties.topicAlias === undefined) return properties;
  const { topicAlias: _alias, ...kept } = properties;
  return Object.keys(kept).length === 0 ? undefined : kept;
}

/** True for the result of keptProperties that is a problem rather than properties. */
export function isProblem(value: PublishProperties | PropertyProblem | undefined): value is PropertyProblem {
  return value !== undefined && 'reasonCode' in value;
}

/**
 * `msg` as published at `now`: a Message Expiry Interval becomes an absolute expiry, after which
 * the message is no longer sent from a queue or the retained store [MQTT-3.3.2-5].
 */
export function withExpiry(msg: Message, now: number): Message {
  const interval = msg.properties?.messageExpiryInterval;
  return interval === undefined ? msg : { ...msg, expiresAt: now + interval * 1000 };
}

/** Whether `msg` expired by `now`; a message without an expiry never does. */
export function hasExpired(msg: Message, now: number): boolean {
  return msg.expiresAt !== undefined && msg.expiresAt <= now;
}

/** A Message from its parts, with MQTT 5 properties when there are any (none for 3.1.1). */
export function messageOf(topic: string, payload: Buffer, qos: QoS, retain: boolean, properties: PublishProperties | undefined): Message {
  return properties === undefined ? { topic, payload, qos, retain } : { topic, payload, qos, retain, properties };
}
