/**
 * Access control lists in Mosquitto's acl_file syntax (mosquitto.conf(5), "acl_file"), with the
 * semantics of Mosquitto 2.0's src/security_default.c, so an existing file works unchanged:
 *
 *   # comment
 *   topic [read|write|readwrite|deny] FILTER   before any `user` line: anonymous clients
 *   user NAME                                  the `topic` lines below are NAME's
 *   pattern [read|write|readwrite|deny] FILTER everyone, with %u (user name) and %c (client id)
 *
 * The access defaults to readwrite. A client's own `topic` rules are tried first, then the
 * patterns; `deny` rules come first in each (Mosquitto moves them to the front), so a deny wins.
 * Nothing matching is a deny; a user with no block and no pattern may do nothing. A topic
 * starting with `$` is matched only by a filter starting with `$` (`#` does not cover `$SYS/…`).
 * Patterns are refused to a client whose user name or client id contains `+` or `#` (Mosquitto 2:
 * such a name could widen the pattern); in addition — as Mosquitto 1.x did — a pattern using
 * `%u` or `%c` does not match for a name containing `/`, which could reach into another user's
 * subtree.
 *
 * Publishing to `$SYS/…` is refused whatever the rules say, except a bridge's
 * `$SYS/broker/connection/<id>/state` (Mosquitto's acl__check_dollar).
 *
 * SUBSCRIBE: Mosquitto 2 never refuses a subscription through acl_file and only filters what it
 * delivers. Here a filter is refused (SUBACK 0x80 / 0x87) when it could never deliver anything —
 * no read rule shares a topic with it — or when a deny rule covers all of it; every other filter is
 * granted, and each message is checked against the read rules on delivery, so a `#` subscriber
 * gets only what it may read. `$share/{name}/` is checked by the filter after it.
 */
import { filterMatches, sharedFilter, topicFilterError } from '../../gateway/broker';

export type Access = 'read' | 'write';

/** Who asks: a network client or an internal publisher (auth-adapter.ts). */
export interface AclClient {
  readonly clientId: string;
  readonly username: string | undefined;
}

interface Rule {
  readonly filter: string;
  readonly read: boolean;
  readonly write: boolean;
  readonly deny: boolean;
  readonly usesUser: boolean;
  readonly usesClient: boolean;
}

export interface ParsedAcl {
  readonly acl: Acl;
  /** Every problem as `FILE:LINE: what`; the file is not used when there is one. */
  readonly problems: readonly string[];
}

/** A filter far deeper than any limit, for validating rules (limits.maxTopicLevels applies to clients). */
const ANY_DEPTH = 1_000_000;

export class Acl {
  private constructor(
    /** `topic` rules before the first `user` line; undefined when there are none (anonymous may do nothing but patterns). */
    private readonly anonymous: readonly Rule[] | undefined,
    private readonly users: ReadonlyMap<string, readonly Rule[]>,
    private readonly patterns: readonly Rule[],
  ) {}

  /** Parses an ACL file; `source` (its path) names it in the problems. */
  static parse(text: string, source: string): ParsedAcl {
    const problems: string[] = [];
    let anonymous: Rule[] | undefined;
    const users = new Map<string, Rule[]>();
    const patterns: Rule[] = [];
    let user: string | undefined;
    text.split('\n').forEach((raw, index) => {
      const line = raw.trimEnd();
      const problem = (what: string): void => void problems.push(`${source}:${index + 1}: ${what}`);
      const start = line.trimStart();
      if (start.length === 0 || start.startsWith('#')) return;
      const [keyword, rest] = splitWord(start);
      if (keyword === 'user') {
        if (rest.length === 0) problem('user without a name');
        else user = rest;
        return;
      }
      if (keyword !== 'topic' && keyword !== 'pattern') {
        problem(`expected "topic", "pattern" or "user", found ${JSON.stringify(keyword)}`);
        return;
      }
      if (rest.length === 0) {
        problem(`${keyword} without a topic filter`);
        return;
      }
      // `topic FILTER` or `topic ACCESS FILTER`; the filter is the rest of the line (it may hold spaces).
      const [first, remainder] = splitWord(rest);
      const access = remainder.length === 0 ? 'readwrite' : first;
      const filter = remainder.length === 0 ? first : remainder;
      if (access !== 'read' && access !== 'write' && access !== 'readwrite' && access !== 'deny') {
        problem(`access must be read, write, readwrite or deny, not ${JSON.stringify(access)}`);
        return;
      }
      const invalid = topicFilterError(filter, ANY_DEPTH);
      if (invalid !== null) {
        problem(`invalid topic filter ${JSON.stringify(filter)}: ${invalid.message}`);
        return;
      }
      const rule: Rule = {
        filter,
        read: access === 'read' || access === 'readwrite',
        write: access === 'write' || access === 'readwrite',
        deny: access === 'deny',
        usesUser: keyword === 'pattern' && filter.includes('%u'),
        usesClient: keyword === 'pattern' && filter.includes('%c'),
      };
      let list: Rule[];
      if (keyword === 'pattern') list = patterns;
      else if (user === undefined) list = anonymous ??= [];
      else {
        list = users.get(user) ?? [];
        users.set(user, list);
      }
      // Deny rules first (as Mosquitto's add__acl), so a deny wins over any allow.
      if (rule.deny) list.unshift(rule);
      else list.push(rule);
    });
    return { acl: new Acl(anonymous, users, patterns), problems };
  }

  /** Counts for a log line. */
  get size(): { users: number; patterns: number; anonymousRules: number } {
    return { users: this.users.size, patterns: this.patterns.length, anonymousRules: this.anonymous?.length ?? 0 };
  }

  /** May `client` read (receive) or write (publish) `topic`? */
  allows(client: AclClient, topic: string, access: Access): boolean {
    // $SYS is the broker's: no client writes there but bridge states (Mosquitto's acl__check_dollar).
    if (access === 'write' && topic.startsWith('$SYS/') && !filterMatches(BRIDGE_STATE, topic)) return false;
    for (const rule of this.ownRules(client)) {
      const decision = decide(rule, rule.filter, topic, access);
      if (decision !== undefined) return decision;
    }
    if (this.patterns.length === 0 || dangerous(client)) return false;
    for (const rule of this.patterns) {
      const filter = substituted(rule, client);
      const decision = filter === null ? undefined : decide(rule, filter, topic, access);
      if (decision !== undefined) return decision;
    }
    return false;
  }

  /** May `client` subscribe to `filter` (module comment: refused only if it could never receive anything)? */
  allowsSubscription(client: AclClient, filter: string): boolean {
    const inner = sharedFilter(filter) ?? filter;
    let readable = false;
    // True when a deny rule covers the whole filter; notes a read rule sharing a topic with it.
    const refuses = (rule: Rule, ruleFilter: string): boolean => {
      if (rule.deny) return filterCovers(ruleFilter, inner);
      if (rule.read && filtersIntersect(ruleFilter, inner)) readable = true;
      return false;
    };
    for (const rule of this.ownRules(client)) if (refuses(rule, rule.filter)) return false;
    if (this.patterns.length === 0 || dangerous(client)) return readable;
    for (const rule of this.patterns) {
      const ruleFilter = substituted(rule, client);
      if (ruleFilter !== null && refuses(rule, ruleFilter)) return false;
    }
    return readable;
  }

  private ownRules(client: AclClient): readonly Rule[] {
    return (client.username === undefined ? this.anonymous : this.users.get(client.username)) ?? NO_RULES;
  }
}

const NO_RULES: readonly Rule[] = [];

/** The one $SYS topic a client (a bridge) may write, if the rules allow it. */
const BRIDGE_STATE = '$SYS/broker/connection/+/state';

/** A matching rule decides (a deny refuses, an allow of this access allows); undefined: try the next. */
function decide(rule: Rule, filter: string, topic: string, access: Access): boolean | undefined {
  if (!filterMatches(filter, topic)) return undefined;
  if (rule.deny) return false;
  return (access === 'read' ? rule.read : rule.write) ? true : undefined;
}

/** The first word of `text` (up to a space or tab) and the rest, trimmed. */
function splitWord(text: string): [string, string] {
  const match = /^(\S+)\s*(.*)$/.exec(text);
  return match === null ? ['', ''] : [match[1] as string, (match[2] as string).trim()];
}

/** A name with `+` or `#` would turn a pattern into a wider wildcard (Mosquitto 2 refuses such clients all patterns). */
function dangerous(client: AclClient): boolean {
  return /[+#]/.test(client.clientId) || (client.username !== undefined && /[+#]/.test(client.username));
}

/** The pattern's filter for `client`, or null when it cannot apply (no user name for %u, a '/' in a name). */
function substituted(rule: Rule, client: AclClient): string | null {
  let filter = rule.filter;
  if (rule.usesUser) {
    if (client.username === undefined || client.username.includes('/')) return null;
    filter = filter.replaceAll('%u', client.username);
  }
  if (rule.usesClient) {
    if (client.clientId.includes('/')) return null;
    filter = filter.replaceAll('%c', client.clientId);
  }
  return filter;
}

/** A literal first level starting with '$': only filters with the same literal match its topics [MQTT-4.7.2-1]. */
function dollarLiteral(level: string | undefined): boolean {
  return level !== undefined && level.startsWith('$');
}

/** Is there a topic both filters match? */
export function filtersIntersect(a: string, b: string): boolean {
  const x = a.split('/');
  const y = b.split('/');
  for (let i = 0; ; i++) {
    if (i === x.length || i === y.length) {
      // One ended: they share its topic only if the other ends here too, or goes on with '#' (which matches the parent).
      const other = i === x.length ? y : x;
      return other.length === i || (other.length === i + 1 && other[i] === '#');
    }
    const p = x[i] as string;
    const q = y[i] as string;
    const wildP = p === '+' || p === '#';
    const wildQ = q === '+' || q === '#';
    if (wildP || wildQ) {
      // A wildcard first level never matches a '$' topic.
      if (i === 0 && !(wildP && wildQ) && dollarLiteral(wildP ? q : p)) return false;
      if (p === '#' || q === '#') return true;
      continue;
    }
    if (p !== q) return false;
  }
}

/** Does `outer` match every topic `inner` matches? */
export function filterCovers(outer: string, inner: string): boolean {
  const x = outer.split('/');
  const y = inner.split('/');
  for (let i = 0; ; i++) {
    if (i === x.length) return i === y.length;
    const p = x[i] as string;
    if (p === '#') return !(i === 0 && dollarLiteral(y[0]));
    if (i === y.length) return false;
    const q = y[i] as string;
    if (q === '#') return false;
    if (p === '+') {
      if (i === 0 && dollarLiteral(q)) return false;
      continue;
    }
    if (q === '+' || p !== q) return false;
  }
}
