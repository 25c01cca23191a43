/**
 * Topic names and topic filters (MQTT 3.1.1 section 4.7, MQTT 5.0 section 4.7).
 * Validation returns a reason string instead of throwing: the caller decides whether an invalid
 * topic closes the connection (PUBLISH, SUBSCRIBE in 3.1.1) or gets a reason code (MQTT 5).
 */

/** Why a topic is invalid: `kind` is stable for callers to branch on, `message` is for people. */
export interface TopicError {
  readonly kind: 'empty' | 'nul' | 'wildcard' | 'too-many-levels' | 'misplaced-wildcard';
  readonly message: string;
}

/** Why a topic name is invalid, or null when it is valid. */
export function topicNameError(topic: string, maxLevels: number): TopicError | null {
  if (topic.length === 0) return { kind: 'empty', message: 'empty topic name' }; // [MQTT-4.7.3-1]
  if (topic.includes('\u0000')) return { kind: 'nul', message: 'NUL character in topic name' }; // [MQTT-4.7.3-2]
  if (topic.includes('+') || topic.includes('#')) return { kind: 'wildcard', message: 'wildcard in topic name' }; // [MQTT-3.3.2-2]
  if (countLevels(topic) > maxLevels) return { kind: 'too-many-levels', message: `more than ${maxLevels} topic levels` };
  return null;
}

/** Why a topic filter is invalid, or null when it is valid. */
export function topicFilterError(filter: string, maxLevels: number): TopicError | null {
  if (filter.length === 0) return { kind: 'empty', message: 'empty topic filter' }; // [MQTT-4.7.3-1]
  if (filter.includes('\u0000')) return { kind: 'nul', message: 'NUL character in topic filter' }; // [MQTT-4.7.3-2]
  const levels = filter.split('/');
  if (levels.length > maxLevels) return { kind: 'too-many-levels', message: `more than ${maxLevels} topic levels` };
  for (let i = 0; i < levels.length; i++) {
    const level = levels[i] as string;
    if (level.includes('#') && (level !== '#' || i !== levels.length - 1)) {
      return { kind: 'misplaced-wildcard', message: "'#' must be a whole level and the last one" }; // [MQTT-4.7.1-2]
    }
    if (level.includes('+') && level !== '+') return { kind: 'misplaced-wildcard', message: "'+' must occupy a whole level" }; // [MQTT-4.7.1-3]
  }
  return null;
}

function countLevels(topic: string): number {
  let n = 1;
  for (let i = 0; i < topic.length; i++) if (topic.charCodeAt(i) === 0x2f) n++;
  return n;
}

/**
 * Does `filter` match `topic`? Used where a trie walk is not worth it (retained messages on
 * SUBSCRIBE). Both arguments are assumed valid.
 */
export function filterMatches(filter: string, topic: string): boolean {
  // [MQTT-4.7.2-1] a filter starting with a wildcard does not match topics starting with '$'.
  if (topic.charCodeAt(0) === 0x24 && (filter.charCodeAt(0) === 0x23 || filter.charCodeAt(0) === 0x2b)) {
    return false;
  }
  const f = filter.split('/');
  const t = topic.split('/');
  for (let i = 0; i < f.length; i++) {
    const level = f[i];
    if (level === '#') return true; // also matches the parent level: 'sport/#' matches 'sport'
    if (i >= t.length) return false;
    if (level !== '+' && level !== t[i]) return false;
  }
  return f.length === t.length;
}

const SHARE_PREFIX = '$share/';

/**
 * The filter of a shared subscription, `$share/{ShareName}/{filter}` (MQTT 5.0 section 4.8.2),
 * after its ShareName; null for a filter that is not shared. Assumes subscriptionFilterError passed.
 */
export function sharedFilter(filter: string): string | null {
  if (!filter.startsWith(SHARE_PREFIX)) return null;
  return filter.slice(filter.indexOf('/', SHARE_PREFIX.length) + 1);
}

/**
 * Why a topic filter, shared or not, is invalid, or null. A shared one needs a ShareName of at
 * least one character without '/', '+' or '#', then '/' and a valid filter [MQTT-4.8.2-1]
 * [MQTT-4.8.2-2]; its levels are counted without the prefix.
 */
export function subscriptionFilterError(filter: string, maxLevels: number): TopicError | null {
  if (!filter.startsWith(SHARE_PREFIX)) return topicFilterError(filter, maxLevels);
  const slash = filter.indexOf('/', SHARE_PREFIX.length);
  if (slash <= SHARE_PREFIX.length) return { kind: 'misplaced-wildcard', message: 'a shared subscription is $share/{ShareName}/{filter} with a ShareName of at least one character' };
  const group = filter.slice(SHARE_PREFIX.length, slash);
  if (group.includes('+') || group.includes('#')) return { kind: 'misplaced-wildcard', message: "a ShareName must not contain '+' or '#'" };
  return topicFilterError(filter.slice(slash + 1), maxLevels);
}
