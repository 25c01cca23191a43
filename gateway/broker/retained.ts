import type { Message } from './types';
import { filterMatches } from './topic';

/**
 * Retained messages, one per topic (3.1.1 section 3.3.1.3). In memory; persistence is added
 * through a storage port by the SQLite adapter.
 */
export class RetainedMessages {
  private readonly byTopic = new Map<string, Message>();

  constructor(private readonly maxRetained: number) {}

  get size(): number {
    return this.byTopic.size;
  }

  /**
   * Stores, replaces or (empty payload, [MQTT-3.3.1-10]) deletes the retained message of a topic.
   * Returns false when a new topic is refused because the store is full.
   */
  store(msg: Message): boolean {
    if (msg.payload.length === 0) {
      this.byTopic.delete(msg.topic);
      return true;
    }
    if (!this.byTopic.has(msg.topic) && this.byTopic.size >= this.maxRetained) return false;
    this.byTopic.set(msg.topic, msg);
    return true;
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
