import type { Message } from './types';

/**
 * Storage port for retained messages (issue 4, item 2). The core calls it synchronously: `load`
 * once before the listeners open, `save` on every change of a retained message. Implementations
 * batch the saves (group commit) and must not throw from `save`: a storage fault is theirs to log
 * and count, while live routing goes on.
 */
export interface RetainedStore {
  /** Every stored retained message. */
  load(): Message[];
  /** The retained message of `topic` is now `message`; null when it was deleted. */
  save(topic: string, message: Message | null): void;
}
