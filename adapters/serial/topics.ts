/**
 * Topics built from sensor data. A serial line is untrusted input: a key such as `a/#`, `+` or
 * `$SYS` must never become a wildcard, an extra topic level or a `$` topic, and a key cannot be
 * longer than a bound. The configured template (checked once, at config time) supplies the fixed
 * part; only the `{key}` part comes from the line, one sanitised segment per JSON nesting level.
 */

/** Longest key segment taken from sensor data, in code points; longer keys are truncated. */
export const MAX_KEY_SEGMENT = 64;
/** Deepest JSON nesting turned into topic levels; deeper values are published as JSON text. */
export const MAX_KEY_DEPTH = 8;

/** Port names are used as one topic level and in Home Assistant ids, so they are kept plain. */
export const PORT_NAME_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Characters a topic level taken from data may not contain: the wildcards and the level separator
 * ([MQTT-3.3.2-2], and '/' would escape the configured prefix), NUL ([MQTT-4.7.3-2]), C0/C1
 * controls and non-characters (MQTT 3.1.1 section 1.5.3 says they SHOULD NOT appear), and lone
 * surrogates, which JSON "\ud800" escapes can produce and which UTF-8 cannot encode.
 */
function isForbidden(cp: number): boolean {
  return (
    cp === 0x2b || // +
    cp === 0x23 || // #
    cp === 0x2f || // /
    cp < 0x20 ||
    (cp >= 0x7f && cp <= 0x9f) ||
    (cp >= 0xd800 && cp <= 0xdfff) ||
    (cp >= 0xfdd0 && cp <= 0xfdef) ||
    (cp & 0xfffe) === 0xfffe
  );
}

/** One safe, non-empty topic level from an untrusted key. Forbidden characters become '_'. */
export function sanitiseKeySegment(raw: string): string {
  let out = '';
  let n = 0;
  for (const ch of raw) {
    if (n === MAX_KEY_SEGMENT) break;
    out += isForbidden(ch.codePointAt(0) as number) ? '_' : ch;
    n++;
  }
  if (out === '') return '_'; // an empty level would make `a//b` — [MQTT-4.7.1] allows it, readers don't expect it
  // '$' at the start of a level is harmless inside a prefix, but with a template such as `{key}` it
  // would reach the `$SYS` space; replaced everywhere so the rule does not depend on the template.
  if (out.charCodeAt(0) === 0x24) out = `_${out.slice(1)}`;
  return out;
}

/** True when a configured key (a CSV column, a Home Assistant key) is already a safe segment. */
export function isSafeKey(key: string): boolean {
  return sanitiseKeySegment(key) === key;
}

export interface CompiledTemplate {
  /** Text before `{key}` (or the whole topic when there is no `{key}`), `{name}` substituted. */
  readonly prefix: string;
  readonly suffix: string;
  readonly hasKey: boolean;
}

const PLACEHOLDER = /\{([^{}]*)\}/g;

/**
 * Why a topic template is unusable, or null. `allowKey`: `{key}` may appear (once); `needsKey`:
 * it must. The fixed part must be a valid topic name on its own: no wildcards, no NUL, no empty
 * levels and no leading '$'.
 */
export function templateError(template: string, options: { allowKey: boolean; needsKey: boolean }): string | null {
  let keys = 0;
  for (const match of template.matchAll(PLACEHOLDER)) {
    const name = match[1];
    if (name === 'key') keys++;
    else if (name !== 'name') return `unknown placeholder {${name}} (use {name}${options.allowKey ? ' and {key}' : ''})`;
  }
  const fixed = template.replace(PLACEHOLDER, (_m, name: string) => (name === 'key' ? 'k' : 'n'));
  if (fixed.includes('{') || fixed.includes('}')) return 'unbalanced { or }';
  if (fixed.length === 0) return 'empty topic';
  if (fixed.includes('+') || fixed.includes('#')) return "wildcards '+' and '#' are not allowed in a topic";
  if (fixed.includes('\u0000')) return 'NUL is not allowed in a topic';
  if (fixed.startsWith('$')) return "topics starting with '$' are reserved for the broker";
  if (fixed.split('/').some((level) => level === '')) return 'empty topic level (leading, trailing or double /)';
  if (keys > 0 && !options.allowKey) return '{key} is not allowed here';
  if (keys > 1) return '{key} may appear only once';
  if (keys === 0 && options.needsKey) return 'must contain {key}: this format publishes one message per key';
  return null;
}

/** Substitutes `{name}` and splits at `{key}`. The template must have passed `templateError`. */
export function compileTemplate(template: string, name: string): CompiledTemplate {
  const withName = template.replace(/\{name\}/g, name);
  const at = withName.indexOf('{key}');
  if (at < 0) return { prefix: withName, suffix: '', hasKey: false };
  return { prefix: withName.slice(0, at), suffix: withName.slice(at + '{key}'.length), hasKey: true };
}

/** The topic for a sanitised key (segments already joined by '/'). */
export function renderTopic(template: CompiledTemplate, key: string): string {
  return template.hasKey ? template.prefix + key + template.suffix : template.prefix;
}
