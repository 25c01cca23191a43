import type { Message } from './types';
import { filterMatches } from './topic';

/**
 * Retained messages, one per topic (3.1.1 section 3.3.1.3). In memory; persistence is added
 * through a storage port by the SQLite adapter.
 */
export class RetainedMessages {
  private readonly byTopic = new Map<string, Message>();
  private payloadBytes = 0;

  constructor(
    private readonly maxRetained: number,
    private readonly maxBytes: number,
  ) {}

  /** Payload bytes of all retained messages. */
  get bytes(): number {
    return this.payloadBytes;
  }

  get size(): number {
    return this.byTopic.size;
  }

  /**
   * Stores, replaces or (empty payload, [MQTT-3.3.1-10]) deletes the retained message of a topic.
   * Returns 'ok', or which limit refused it: the message is then not retained (the previous
   * retained message of the topic, if any, stays).
   */
  store(msg: Message): 'ok' | 'maxRetained' | 'maxRetainedBytes' {
    const previous = this.byTopic.get(msg.topic);
    const previousBytes = previous?.payload.length ?? 0;
    if (msg.payload.length === 0) {
      this.delete(msg.topic);
      return 'ok';
    }
    if (previous === undefined && this.byTopic.size >= this.maxRetained) return 'maxRetained';
    if (this.payloadBytes - previousBytes + msg.payload.length > this.maxBytes) return 'maxRetainedBytes';
    this.byTopic.set(msg.topic, msg);
    this.payloadBytes += msg.payload.length - previousBytes;
    return 'ok';
  }

  /** Removes the retained message of `topic`, if any. */
  delete(topic: string): void {
    const previous = this.byTopic.get(topic);
    if (previous === undefined) return;
    this.byTopic.delete(topic);
    this.payloadBytes -= previous.payload.length;
  }

  get(topic: string): Message | undefined {
    return this.byTopic.get(topic);
  }

  /** Retained messages whose topic matches `filter`. A plain topic is a direct lookup. */
  *matching(filter: string): IterableIterator<Message> {
    if (!filter.includes('+') && !filter.includes('#')) {
      const msg = this.byTopic.get(filter);
      if (msg) yield msg;
      return;
    }
    for (const msg of this.byTopic.values()) if (filterMatches(filter, msg.topic)) yield msg;
  }
}
