/**
 * Topic names, topic filters and the subscription trie (MQTT 3.1.1 section 4.7).
 * `filterMatches` and `TopicTree#match` must agree on every case, so the matching cases run
 * against both.
 */
import t from 'tap';
import { filterMatches, topicFilterError, topicNameError } from '../../gateway/broker/topic';
import { TopicTree } from '../../gateway/broker/topic-tree';

const MAX = 64;

/** Keys of the entries of a one-filter tree that match `topic`. */
function treeMatches(filter: string, topic: string): boolean {
  const tree = new TopicTree<number>();
  tree.set(filter, 'c', 1);
  let hits = 0;
  tree.match(topic, () => hits++);
  if (hits > 1) throw new Error(`filter ${filter} visited ${hits} times for ${topic}`);
  return hits === 1;
}

/** [filter, topic, matches, why] */
const MATCH_CASES: [string, string, boolean, string][] = [
  // 4.7.1.2 multi-level wildcard
  ['sport/tennis/player1/#', 'sport/tennis/player1', true, '# matches the parent level'],
  ['sport/tennis/player1/#', 'sport/tennis/player1/ranking', true, '# matches one level'],
  ['sport/tennis/player1/#', 'sport/tennis/player1/score/wimbledon', true, '# matches several levels'],
  ['sport/#', 'sport', true, "'sport/#' also matches 'sport' [MQTT-4.7.1-2 area]"],
  ['sport/#', 'sports', false, '# does not match a longer first level'],
  ['sport/#', 'sport/', true, '# matches an empty child level'],
  ['sport/tennis/#', 'sport', false, 'only the direct parent of # matches'],
  ['#', 'sport/tennis', true, "'#' alone matches everything"],
  ['#', '/', true, "'#' matches '/'"],
  ['#', 'a', true, "'#' matches a single level"],
  // 4.7.1.3 single-level wildcard
  ['sport/tennis/+', 'sport/tennis/player1', true, '+ matches one level'],
  ['sport/tennis/+', 'sport/tennis/player1/ranking', false, '+ matches exactly one level'],
  ['sport/+', 'sport', false, "'sport/+' does not match 'sport'"],
  ['sport/+', 'sport/', true, "'sport/+' matches 'sport/' (empty level)"],
  ['+', 'sport', true, '+ matches a single-level topic'],
  ['+', '/finance', false, "'+' does not match '/finance' (two levels)"],
  ['+/+', '/finance', true, "'+/+' matches '/finance': + matches the empty first level"],
  ['/+', '/finance', true, "'/+' matches '/finance'"],
  ['a/+/b', 'a//b', true, '+ matches an empty middle level'],
  ['a/+/b', 'a/x/b', true, '+ matches a middle level'],
  ['a/+/b', 'a/x/y/b', false, '+ does not span levels'],
  ['+/+/+', 'a//', true, '+ matches empty trailing levels'],
  ['a/+/#', 'a', false, "'a/+/#' needs at least the + level"],
  ['a/+/#', 'a/x', true, "'a/+/#' matches the parent of #"],
  ['+/#', 'a/b/c', true, '+ then #'],
  // exact and empty levels are distinct
  ['a/b', 'a/b', true, 'exact match'],
  ['a/b', 'a/b/', false, 'a trailing slash adds a level'],
  ['a//b', 'a/b', false, 'an empty level is a level'],
  ['/', '/', true, "'/' is two empty levels"],
  ['Sport', 'sport', false, 'matching is case-sensitive'],
  // 4.7.2 topics beginning with $
  ['#', '$SYS/broker/uptime', false, "'#' does not match $-topics [MQTT-4.7.2-1]"],
  ['#', '$SYS', false, "'#' does not match '$SYS' [MQTT-4.7.2-1]"],
  ['+/monitor/Clients', '$SYS/monitor/Clients', false, "'+/monitor/Clients' does not match a $-topic [MQTT-4.7.2-1]"],
  ['+', '$foo', false, "'+' does not match a $-topic"],
  ['+/#', '$SYS/a', false, "'+/#' does not match a $-topic"],
  ['$SYS/#', '$SYS/broker/uptime', true, "'$SYS/#' matches $SYS topics"],
  ['$SYS/#', '$SYS', true, "'$SYS/#' matches '$SYS'"],
  ['$SYS/monitor/+', '$SYS/monitor/Clients', true, "'$SYS/monitor/+' matches"],
  ['$SYS/+/Clients', '$SYS/monitor/Clients', true, 'wildcards after a literal $ level are allowed'],
  ['a/#', 'a/$b', true, "'$' below the first level is ordinary"],
  ['+/$b', 'a/$b', true, "'+' matches a level before a '$' level"],
  ['#', 'a$', true, "'$' not at the start is ordinary"],
];

t.test('filterMatches and TopicTree agree with the spec', async (t) => {
  for (const [filter, topic, expected, why] of MATCH_CASES) {
    t.equal(filterMatches(filter, topic), expected, `filterMatches('${filter}', '${topic}'): ${why}`);
    t.equal(treeMatches(filter, topic), expected, `TopicTree '${filter}' vs '${topic}': ${why}`);
  }
});

t.test('topicNameError', async (t) => {
  t.equal(topicNameError('sport/tennis/player1', MAX), null, 'plain topic is valid');
  t.equal(topicNameError('/', MAX), null, "'/' is a valid topic name");
  t.equal(topicNameError('a//b', MAX), null, 'empty levels are valid');
  t.equal(topicNameError('$SYS/broker', MAX), null, "'$' topics are valid names");
  t.equal(topicNameError(' ', MAX), null, 'a space is a valid topic name');
  t.equal(topicNameError('sensors/ünïcødé/温度', MAX), null, 'non-ASCII is valid');
  t.equal(topicNameError('', MAX)?.kind, 'empty', 'empty topic name is invalid [MQTT-4.7.3-1]');
  t.equal(topicNameError('a\u0000b', MAX)?.kind, 'nul', 'NUL is invalid [MQTT-4.7.3-2]');
  t.equal(topicNameError('\u0000', MAX)?.kind, 'nul', 'a lone NUL is invalid');
  for (const name of ['sport/+', 'sport/#', '#', '+', 'sport+', 'sport/tennis#', 'a/+/b', 'a#b']) {
    t.equal(topicNameError(name, MAX)?.kind, 'wildcard', `wildcard in topic name '${name}' is invalid [MQTT-3.3.2-2]`);
  }
  const err = topicNameError('a/#', MAX);
  t.type(err?.message, 'string', 'an error carries a message for people');
  t.ok((err?.message ?? '').length > 0, 'the message is not empty');
});

t.test('topicNameError: maximum levels', async (t) => {
  const levels = (n: number): string => Array.from({ length: n }, (_, i) => `l${i}`).join('/');
  t.equal(topicNameError(levels(64), 64), null, 'exactly maxLevels levels is valid');
  t.equal(topicNameError(levels(65), 64)?.kind, 'too-many-levels', 'maxLevels + 1 is invalid');
  t.equal(topicNameError('a', 1), null, 'one level with max 1');
  t.equal(topicNameError('a/b', 1)?.kind, 'too-many-levels', 'two levels with max 1');
  t.equal(topicNameError('/', 2), null, "'/' has two levels");
  t.equal(topicNameError('//', 2)?.kind, 'too-many-levels', "'//' has three levels");
  t.equal(topicNameError('/'.repeat(63), 64), null, '63 slashes = 64 empty levels');
  t.equal(topicNameError('/'.repeat(64), 64)?.kind, 'too-many-levels', '64 slashes = 65 levels');
});

t.test('topicFilterError', async (t) => {
  const valid = ['#', '+', 'sport/#', 'sport/tennis/+', '+/tennis/#', '/+', '+/+', 'a//b', '/', '$SYS/#', 'sport/+/player1', '+/+/+/#', 'a/b'];
  for (const f of valid) t.equal(topicFilterError(f, MAX), null, `'${f}' is a valid filter`);
  const misplaced = [
    ['a/#/b', "'#' not last"],
    ['#/a', "'#' first but not last"],
    ['sport/tennis#', "'#' not a whole level [MQTT-4.7.1-2]"],
    ['sport/#/ranking', "'#' in the middle [MQTT-4.7.1-2]"],
    ['##', "'##' is not a whole-level '#'"],
    ['#/', "'#' followed by an empty level"],
    ['sport+', "'+' not a whole level [MQTT-4.7.1-3]"],
    ['a+', "'a+' is invalid"],
    ['+a/b', "'+a' is invalid"],
    ['sport/+tennis', "'+' prefix in a level"],
    ['++', "'++' is not a whole-level '+'"],
    ['a/b+/c', "'+' suffix in a middle level"],
  ] as const;
  for (const [f, why] of misplaced) t.equal(topicFilterError(f, MAX)?.kind, 'misplaced-wildcard', `'${f}': ${why}`);
  t.equal(topicFilterError('', MAX)?.kind, 'empty', 'empty filter is invalid [MQTT-4.7.3-1]');
  t.equal(topicFilterError('a/\u0000', MAX)?.kind, 'nul', 'NUL in a filter is invalid [MQTT-4.7.3-2]');
  t.equal(topicFilterError('a/+', 2), null, 'two levels with max 2');
  t.equal(topicFilterError('a/+/#', 2)?.kind, 'too-many-levels', 'three levels with max 2 (wildcards count as levels)');
  const many = Array.from({ length: 64 }, () => '+').join('/');
  t.equal(topicFilterError(many, 64), null, '64 levels of + with max 64');
  t.equal(topicFilterError(`${many}/#`, 64)?.kind, 'too-many-levels', '65 levels with max 64');
});

t.test('TopicTree set / delete / size', async (t) => {
  const tree = new TopicTree<string>();
  t.equal(tree.size, 0, 'empty tree');
  t.equal(tree.set('a/b', 'c1', 'v1'), true, 'new entry');
  t.equal(tree.set('a/b', 'c2', 'v2'), true, 'second key on the same filter');
  t.equal(tree.set('a/b', 'c1', 'v1b'), false, 'replacing an entry is not new');
  t.equal(tree.size, 2, 'replacing does not change the size');
  t.equal(tree.set('a/+', 'c1', 'v3'), true, 'same key on another filter is a separate entry');
  t.equal(tree.size, 3);

  const seen: [string, string][] = [];
  tree.match('a/b', (k, v) => seen.push([k, v]));
  t.same(
    seen.sort((x, y) => (x[0] + x[1]).localeCompare(y[0] + y[1])),
    [
      ['c1', 'v1b'],
      ['c1', 'v3'],
      ['c2', 'v2'],
    ],
    'match visits every (filter, key) entry once, with the replaced value',
  );

  t.equal(tree.delete('a/b', 'nobody'), false, 'deleting an unknown key');
  t.equal(tree.delete('x/y', 'c1'), false, 'deleting under an unknown filter');
  t.equal(tree.delete('a', 'c1'), false, 'deleting at an intermediate node without values');
  t.equal(tree.size, 3, 'failed deletes do not change the size');
  t.equal(tree.delete('a/b', 'c1'), true, 'deleting an entry');
  t.equal(tree.delete('a/b', 'c1'), false, 'deleting it twice');
  t.equal(tree.size, 2);
  const after: string[] = [];
  tree.match('a/b', (k, v) => after.push(`${k}=${v}`));
  t.same(after.sort(), ['c1=v3', 'c2=v2'], 'the deleted entry no longer matches');
});

t.test('TopicTree match: no duplicates, $ rule, empty levels', async (t) => {
  const tree = new TopicTree<string>();
  const filters = ['#', '+/#', 'a/#', 'a/+', 'a/b', '+/b', '+/+', 'a/b/#', '$SYS/#', '+/monitor/Clients', '/+', 'a//b', 'a/+/b'];
  for (const f of filters) tree.set(f, f, f);
  const matching = (topic: string): string[] => {
    const out: string[] = [];
    tree.match(topic, (k) => out.push(k));
    return out.sort();
  };
  t.same(matching('a/b'), ['#', '+/#', '+/+', '+/b', 'a/#', 'a/+', 'a/b', 'a/b/#'].sort(), "'a/b'");
  t.same(matching('a'), ['#', '+/#', 'a/#'].sort(), "'a': parent of 'a/#' and '+/#' but not 'a/+'");
  t.same(matching('a//b'), ['#', '+/#', 'a/#', 'a//b', 'a/+/b'].sort(), "'a//b': + matches the empty level");
  t.same(matching('/finance'), ['#', '+/#', '+/+', '/+'].sort(), "'/finance'");
  t.same(matching('$SYS/monitor/Clients'), ['$SYS/#'], '$-topic: only the filter starting with $SYS');
  t.same(matching('$other/b'), [], 'other $-topic: no wildcard-first filter');
  t.same(matching('x/monitor/Clients'), ['#', '+/#', '+/monitor/Clients'].sort(), 'non-$ topic matches +/monitor/Clients');
});

/** Number of trie nodes below the root (white-box: pruning is invisible through the public API). */
function nodeCount(tree: TopicTree<unknown>): number {
  interface Node {
    children: Map<string, Node>;
  }
  const root = (tree as unknown as { root: Node }).root;
  let n = 0;
  const stack: Node[] = [root];
  for (let node = stack.pop(); node !== undefined; node = stack.pop()) {
    for (const child of node.children.values()) {
      n++;
      stack.push(child);
    }
  }
  return n;
}

t.test('TopicTree prunes empty nodes on delete', async (t) => {
  const tree = new TopicTree<number>();
  tree.set('a/b/c', 'k1', 1);
  tree.set('a/b', 'k2', 2);
  tree.set('a/x/y', 'k3', 3);
  t.equal(nodeCount(tree), 5, 'a, b, c, x, y');
  tree.delete('a/b/c', 'k1');
  t.equal(nodeCount(tree), 4, "'c' pruned; 'a/b' still holds k2");
  tree.delete('a/x/y', 'k3');
  t.equal(nodeCount(tree), 2, "'x' and 'y' pruned; 'a' kept as parent of 'b'");
  tree.delete('a/b', 'k2');
  t.equal(nodeCount(tree), 0, 'everything pruned');
  t.equal(tree.size, 0);

  // Churn of unique filters (client ids in topics) must not leak nodes.
  for (let i = 0; i < 1000; i++) {
    tree.set(`devices/${i}/cmd/#`, `client-${i}`, i);
    tree.set(`devices/${i}/+/state`, `client-${i}`, i);
  }
  t.equal(tree.size, 2000);
  for (let i = 0; i < 1000; i++) {
    tree.delete(`devices/${i}/cmd/#`, `client-${i}`);
    tree.delete(`devices/${i}/+/state`, `client-${i}`);
  }
  t.equal(tree.size, 0, 'size back to 0 after churn');
  t.equal(nodeCount(tree), 0, 'no nodes left after churn');

  // A node with a value but no children is kept; an ancestor with another child is kept.
  tree.set('p', 'k', 1);
  tree.set('p/q', 'k', 1);
  tree.delete('p/q', 'k');
  t.equal(nodeCount(tree), 1, "'p' kept because it holds a value");
  let hits = 0;
  tree.match('p', () => hits++);
  t.equal(hits, 1, "'p' still matches after its child was pruned");
});

t.test('TopicTree with many subscribers on one filter', async (t) => {
  const tree = new TopicTree<number>();
  for (let i = 0; i < 100; i++) tree.set('s/+', `c${i}`, i);
  let sum = 0;
  let n = 0;
  tree.match('s/x', (_k, v) => {
    sum += v;
    n++;
  });
  t.equal(n, 100, 'each key visited once');
  t.equal(sum, (99 * 100) / 2, 'with its own value');
});
