/**
 * Home Assistant MQTT discovery (https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery):
 * one retained config per key seen, at `<prefix>/sensor/<node_id>/<object_id>/config`.
 *
 * Availability uses the port's retained JSON status topic with a value template
 * (`{{ value_json.state }}` → "online"/"offline"), so there is one source of truth for the port
 * state and no second availability topic to keep in step.
 */
import type { HomeAssistantOptions } from './options';

export interface DiscoveryInput {
  readonly gatewayId: string;
  readonly portName: string;
  /** Sanitised key ('' for a whole-line topic). */
  readonly key: string;
  readonly stateTopic: string;
  readonly statusTopic: string;
  readonly qos: 0 | 1 | 2;
  readonly wrap: boolean;
  /** The first value seen, as a JSON literal: a number gets state_class "measurement". */
  readonly sampleJson: string;
  readonly version: string;
  readonly options: HomeAssistantOptions;
}

export interface DiscoveryMessage {
  readonly topic: string;
  readonly payload: string;
}

/** Discovery node and object ids allow only [a-zA-Z0-9_-]. */
export function idPart(text: string): string {
  const out = text.replace(/[^A-Za-z0-9_-]/g, '_');
  return out === '' ? '_' : out;
}

/** FNV-1a, 32 bit: a short, stable suffix that keeps ids of keys such as "a/b" and "a_b" apart. */
function shortHash(text: string): string {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0).toString(16).padStart(8, '0');
}

function keyId(key: string): string {
  const id = idPart(key);
  return id === key ? id : `${id}_${shortHash(key)}`;
}

const NUMERIC = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

export function discoveryMessage(input: DiscoveryInput): DiscoveryMessage {
  const node = `edgeway_${idPart(input.gatewayId)}`;
  const port = idPart(input.portName);
  const object = input.key === '' ? port : `${port}_${keyId(input.key)}`;
  // Own keys only: `keys` is a plain object, and a device printing {"constructor":1} must not get
  // Object.prototype.constructor's hints (its `name` is "Object").
  const hints = input.key === '' || !Object.hasOwn(input.options.keys, input.key) ? undefined : input.options.keys[input.key];
  const stateClass = hints?.stateClass ?? (NUMERIC.test(input.sampleJson) ? 'measurement' : undefined);
  const config: Record<string, unknown> = {
    name: hints?.name ?? (input.key === '' ? input.portName : input.key),
    unique_id: `${node}_${object}`,
    state_topic: input.stateTopic,
    qos: input.qos,
    availability: [
      {
        topic: input.statusTopic,
        value_template: '{{ value_json.state }}',
        payload_available: 'online',
        payload_not_available: 'offline',
      },
    ],
    device: {
      identifiers: [`${node}_${port}`],
      name: input.options.deviceName ?? input.portName,
      manufacturer: 'edgeway',
      model: 'serial sensor',
      sw_version: input.version,
    },
    origin: { name: 'edgeway', sw_version: input.version },
  };
  if (input.wrap) config.value_template = '{{ value_json.value }}';
  if (hints?.unit !== undefined) config.unit_of_measurement = hints.unit;
  if (hints?.deviceClass !== undefined) config.device_class = hints.deviceClass;
  if (stateClass !== undefined) config.state_class = stateClass;
  if (hints?.icon !== undefined) config.icon = hints.icon;
  return { topic: `${input.options.prefix}/sensor/${node}/${object}/config`, payload: JSON.stringify(config) };
}
