/**
 * Subscription trie: one node per topic level, '+' and '#' as ordinary child keys. Matching a
 * topic walks at most (levels × 3) nodes, independent of the number of subscriptions.
 */
interface TrieNode<V> {
  children: Map<string, TrieNode<V>>;
  /** Subscribers at this node, keyed by client id: one entry per session and filter. */
  values: Map<string, V>;
}

function newNode<V>(): TrieNode<V> {
  return { children: new Map(), values: new Map() };
}

export class TopicTree<V> {
  private readonly root: TrieNode<V> = newNode();
  private count = 0;

  /** Number of (filter, key) entries. */
  get size(): number {
    return this.count;
  }

  /** Adds or replaces the entry for `key` under `filter`; true when it is new. */
  set(filter: string, key: string, value: V): boolean {
    let node = this.root;
    for (const level of filter.split('/')) {
      let child = node.children.get(level);
      if (child === undefined) {
        child = newNode();
        node.children.set(level, child);
      }
      node = child;
    }
    const isNew = !node.values.has(key);
    node.values.set(key, value);
    if (isNew) this.count++;
    return isNew;
  }

  /** Removes the entry for `key` under `filter`, pruning empty nodes; true when it existed. */
  delete(filter: string, key: string): boolean {
    const path: [TrieNode<V>, string][] = [];
    let node = this.root;
    for (const level of filter.split('/')) {
      const child = node.children.get(level);
      if (child === undefined) return false;
      path.push([node, level]);
      node = child;
    }
    if (!node.values.delete(key)) return false;
    this.count--;
    // Prune so that a churn of unique filters (client ids in topics) does not leak nodes.
    for (let i = path.length - 1; i >= 0; i--) {
      const [parent, level] = path[i] as [TrieNode<V>, string];
      const child = parent.children.get(level) as TrieNode<V>;
      if (child.values.size > 0 || child.children.size > 0) break;
      parent.children.delete(level);
    }
    return true;
  }

  /** Calls `visit` for every entry whose filter matches `topic` (a valid topic name). */
  match(topic: string, visit: (key: string, value: V) => void): void {
    const levels = topic.split('/');
    // [MQTT-4.7.2-1] wildcards at the first level do not match topics starting with '$'.
    const dollar = topic.charCodeAt(0) === 0x24;
    this.walk(this.root, levels, 0, dollar, visit);
  }

  private walk(node: TrieNode<V>, levels: string[], i: number, dollar: boolean, visit: (key: string, value: V) => void): void {
    const wildcardsAllowed = !(dollar && i === 0);
    if (wildcardsAllowed) {
      const hash = node.children.get('#');
      if (hash !== undefined) for (const [key, value] of hash.values) visit(key, value);
    }
    if (i === levels.length) {
      for (const [key, value] of node.values) visit(key, value);
      return;
    }
    if (wildcardsAllowed) {
      const plus = node.children.get('+');
      if (plus !== undefined) this.walk(plus, levels, i + 1, dollar, visit);
    }
    const exact = node.children.get(levels[i] as string);
    if (exact !== undefined) this.walk(exact, levels, i + 1, dollar, visit);
  }
}
