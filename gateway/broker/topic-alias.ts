import { ReasonCode } from './errors';
import type { PropertyProblem } from './properties';

/**
 * Topic aliases (MQTT 5.0 section 3.3.2.3.4), one set per direction and per connection: they are
 * never carried to another connection [MQTT-3.3.2-7]. Both are bounded by their maximum.
 */

/** The aliases a client sets up for the topics it publishes to; at most the server's Topic Alias Maximum. */
export class InboundAliases {
  private readonly topics: (string | undefined)[] = [];

  constructor(private readonly maximum: number) {}

  /**
   * The topic of a PUBLISH that carries `alias`: `topic` itself, now also the alias's meaning, or
   * for an empty `topic` the one the alias stands for. A problem if the alias is 0 or above the
   * maximum (0x94, [MQTT-3.3.2-8] [MQTT-3.3.2-12]) or names nothing yet (0x82).
   */
  resolve(topic: string, alias: number): string | PropertyProblem {
    if (alias === 0 || alias > this.maximum) {
      return { reasonCode: ReasonCode.TopicAliasInvalid, detail: `Topic Alias ${alias} is outside 1..${this.maximum}` };
    }
    if (topic.length > 0) {
      this.topics[alias] = topic;
      return topic;
    }
    return this.topics[alias] ?? { reasonCode: ReasonCode.ProtocolError, detail: `Topic Alias ${alias} was never set on this connection` };
  }
}

/**
 * The aliases the server assigns to the topics it sends a client, at most the smaller of the
 * client's Topic Alias Maximum and the server's [MQTT-3.1.2-26]. When all are in use, the least
 * recently used one is given to the new topic (the PUBLISH that does so carries the topic, which
 * tells the client). Assigning is two steps, so that a PUBLISH that turns out too large to send
 * does not leave the client without a mapping the server believes it has.
 */
export class OutboundAliases {
  /** Topic → alias, least recently used first (a Map keeps insertion order). */
  private readonly byTopic = new Map<string, number>();
  private readonly byAlias: (string | undefined)[] = [];

  constructor(private readonly maximum: number) {}

  /** The alias the client already knows for `topic` (now the most recently used), or undefined. */
  known(topic: string): number | undefined {
    const alias = this.byTopic.get(topic);
    if (alias !== undefined) {
      this.byTopic.delete(topic);
      this.byTopic.set(topic, alias);
    }
    return alias;
  }

  /** The alias a new topic would get: the next unused one, or the least recently used. */
  candidate(): number {
    if (this.byTopic.size < this.maximum) return this.byTopic.size + 1;
    return this.byTopic.values().next().value as number;
  }

  /** `topic` went out with `alias`: the client maps it so from now on. */
  assign(topic: string, alias: number): void {
    const previous = this.byAlias[alias];
    if (previous !== undefined) this.byTopic.delete(previous);
    this.byAlias[alias] = topic;
    this.byTopic.set(topic, alias);
  }
}
