import { ReasonCode } from './errors';

/**
 * MQTT 5 properties a client may send, per packet (MQTT 5.0 section 2.2.2.2, table of
 * properties). mqtt-packet parses every known property on any packet and turns a repeated one
 * into an array; what it does not check is checked here, once per packet that has properties.
 */
const FROM_CLIENT: Readonly<Record<string, ReadonlySet<string>>> = {
  connect: new Set([
    'sessionExpiryInterval',
    'authenticationMethod',
    'authenticationData',
    'requestProblemInformation',
    'requestResponseInformation',
    'receiveMaximum',
    'topicAliasMaximum',
    'userProperties',
    'maximumPacketSize',
  ]),
  will: new Set(['payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'willDelayInterval', 'userProperties']),
  // Subscription Identifier is for the server to send (from a client: [MQTT-3.3.4-6], checked first).
  publish: new Set(['payloadFormatIndicator', 'messageExpiryInterval', 'contentType', 'responseTopic', 'correlationData', 'topicAlias', 'userProperties']),
  puback: new Set(['reasonString', 'userProperties']),
  pubrec: new Set(['reasonString', 'userProperties']),
  pubrel: new Set(['reasonString', 'userProperties']),
  pubcomp: new Set(['reasonString', 'userProperties']),
  subscribe: new Set(['subscriptionIdentifier', 'userProperties']),
  unsubscribe: new Set(['userProperties']),
  disconnect: new Set(['sessionExpiryInterval', 'reasonString', 'userProperties']),
  auth: new Set(['authenticationMethod', 'authenticationData', 'reasonString', 'userProperties']),
};

/** Why a packet's properties are not acceptable: the reason code to close with, and a detail for the log. */
export interface PropertyProblem {
  readonly reasonCode: number;
  readonly detail: string;
}

/**
 * Checks the properties of one packet (`part` is its cmd, or 'will' for the will properties of
 * CONNECT): a property not defined for the packet is a Malformed Packet (section 2.2.2.2); one
 * that appears twice, other than a User Property, is a Protocol Error; so are the values the
 * specification forbids outright.
 */
export function propertiesProblem(part: string, properties: Readonly<Record<string, unknown>> | undefined): PropertyProblem | null {
  if (properties === undefined) return null;
  const allowed = FROM_CLIENT[part];
  for (const name of Object.keys(properties)) {
    const value = properties[name];
    if (part === 'publish' && name === 'subscriptionIdentifier') {
      return { reasonCode: ReasonCode.ProtocolError, detail: 'Subscription Identifier in a PUBLISH from a client [MQTT-3.3.4-6]' };
    }
    if (allowed === undefined || !allowed.has(name)) {
      return { reasonCode: ReasonCode.MalformedPacket, detail: `property ${name} is not allowed in ${part.toUpperCase()}` };
    }
    if (Array.isArray(value) && name !== 'userProperties') {
      return { reasonCode: ReasonCode.ProtocolError, detail: `property ${name} appears more than once in ${part.toUpperCase()}` };
    }
  }
  // Values that are a Protocol Error in themselves.
  if (properties.receiveMaximum === 0) return { reasonCode: ReasonCode.ProtocolError, detail: 'Receive Maximum 0 (section 3.1.2.11.3)' };
  if (properties.maximumPacketSize === 0) return { reasonCode: ReasonCode.ProtocolError, detail: 'Maximum Packet Size 0 (section 3.1.2.11.4)' };
  if (properties.subscriptionIdentifier === 0) return { reasonCode: ReasonCode.ProtocolError, detail: 'Subscription Identifier 0 (section 3.8.2.1.2)' };
  return null;
}
