import type { PublishProperties } from '../../gateway/broker';

/**
 * MQTT 5 publish properties as JSON text in the database (retained messages, session messages),
 * with binary values (correlationData) coming back as Buffers.
 */
export type Properties = PublishProperties;

/**
 * Marks a binary value inside the properties JSON. U+0000 cannot occur in an MQTT UTF-8 string
 * [MQTT-1.5.4-2], so no user property name can be mistaken for it — unlike Buffer's own toJSON
 * shape `{type: 'Buffer', data}`, which a user property could spell and which JSON.parse does not
 * turn back into a Buffer (correlationData would come back as a plain object).
 */
const BINARY_TAG = '\u0000b64';

export function encodeProperties(properties: Properties): string {
  // `this[key]` is the value before toJSON ran: the only place a Buffer is still recognisable.
  return JSON.stringify(properties, function (this: Record<string, unknown>, key: string, value: unknown) {
    const raw = this[key];
    return raw instanceof Uint8Array ? { [BINARY_TAG]: Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('base64') } : value;
  });
}

export function decodeProperties(text: string): Properties {
  return JSON.parse(text, (_key, value: unknown) => {
    if (typeof value === 'object' && value !== null && BINARY_TAG in value) {
      const encoded = (value as Record<string, unknown>)[BINARY_TAG];
      if (typeof encoded === 'string') return Buffer.from(encoded, 'base64');
    }
    return value;
  }) as Properties;
}
