/**
 * Turns one decoded line into readings, per format. Pure functions: no I/O, no clock, so the
 * bad-input rules are unit-tested exactly as they run.
 */
import type { SerialFormat } from './options';
import { MAX_KEY_DEPTH, sanitiseKeySegment } from './topics';

/** One message to publish: `key` is sanitised (levels joined by '/'), or '' for a whole line. */
export interface Reading {
  readonly key: string;
  /** The bare payload text. */
  readonly text: string;
  /** The value as a JSON literal, for wrapped payloads ({"value":…}). */
  readonly json: string;
}

export type DropReason = 'tooLong' | 'binary' | 'invalidUtf8' | 'parse' | 'tooManyKeys' | 'invalidTopic';
export const DROP_REASONS: readonly DropReason[] = ['tooLong', 'binary', 'invalidUtf8', 'parse', 'tooManyKeys', 'invalidTopic'];

export type ParseResult = { readonly ok: true; readonly readings: Reading[] } | { readonly ok: false; readonly reason: DropReason; readonly detail: string };

export interface ParseOptions {
  readonly format: SerialFormat;
  readonly wholeLine: boolean;
  readonly columns: readonly string[];
  readonly separator: string;
  readonly maxKeys: number;
}

/** JSON's number grammar (RFC 8259 section 6): "21.5" is published as a number, "021" or "0x1f" as text. */
const JSON_NUMBER = /^-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?$/;

function fail(reason: DropReason, detail: string): ParseResult {
  return { ok: false, reason, detail };
}

/** kv/csv values are text on the wire; numbers become JSON numbers when wrapped. */
function textReading(key: string, text: string): Reading {
  return { key, text, json: JSON_NUMBER.test(text) ? text : JSON.stringify(text) };
}

function jsonReading(key: string, value: unknown): Reading {
  const json = JSON.stringify(value) ?? 'null';
  return { key, text: typeof value === 'string' ? value : json, json };
}

/**
 * Bytes that never occur in a text protocol line: C0 controls other than TAB (a trailing CR is
 * already stripped by the splitter) and DEL. Their presence means noise, a baud-rate mismatch or
 * a binary protocol; reported before UTF-8 decoding so that noise is counted as noise.
 */
export function hasBinary(line: Buffer): boolean {
  for (let i = 0; i < line.length; i++) {
    const b = line[i] as number;
    if ((b < 0x20 && b !== 0x09) || b === 0x7f) return true;
  }
  return false;
}

export function parseLine(text: string, options: ParseOptions): ParseResult {
  switch (options.format) {
    case 'raw':
      return { ok: true, readings: [textReadingRaw(text)] };
    case 'json':
      return parseJson(text, options);
    case 'kv':
      return parseKv(text, options);
    case 'csv':
      return parseCsv(text, options);
  }
}

function textReadingRaw(text: string): Reading {
  return { key: '', text, json: JSON.stringify(text) };
}

function parseJson(text: string, options: ParseOptions): ParseResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    return fail('parse', `invalid JSON: ${(err as Error).message}`);
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return fail('parse', 'JSON line is not an object');
  if (options.wholeLine) return { ok: true, readings: [{ key: '', text, json: text }] };
  const readings: Reading[] = [];
  try {
    if (!flatten(value as Record<string, unknown>, '', 1, readings, options.maxKeys)) {
      return fail('tooManyKeys', `more than ${options.maxKeys} keys in one line`);
    }
    if (readings.length === 0) return fail('parse', 'JSON object without values');
  } catch (err) {
    // JSON.parse is iterative but JSON.stringify (for values below MAX_KEY_DEPTH) recurses: a line
    // of a few thousand nested arrays ('[[[…]]]', well within maxLineLength's 64 KiB) overflows
    // the stack, and a RangeError thrown from the port's 'data' listener kills the process.
    if (err instanceof RangeError) return fail('parse', 'JSON nested too deeply');
    throw err;
  }
  return { ok: true, readings };
}

/** Nested objects become levels (`{"a":{"b":1}}` → a/b); stops and returns false past maxKeys. */
function flatten(obj: Record<string, unknown>, prefix: string, depth: number, out: Reading[], maxKeys: number): boolean {
  for (const rawKey of Object.keys(obj)) {
    const key = prefix + sanitiseKeySegment(rawKey);
    const value = obj[rawKey];
    if (value !== null && typeof value === 'object' && !Array.isArray(value) && depth < MAX_KEY_DEPTH) {
      if (!flatten(value as Record<string, unknown>, `${key}/`, depth + 1, out, maxKeys)) return false;
      continue;
    }
    // An empty string would be an empty payload, which deletes a retained value: skipped, as
    // empty csv fields are.
    if (value === '') continue;
    if (out.length === maxKeys) return false;
    out.push(jsonReading(key, value));
  }
  return true;
}

/** `temp=21.5 hum=40`, `temp:21.5,hum:40`, `a=1; b=2`: pairs split on whitespace, ',' or ';'. */
const KV_PAIR_SPLIT = /[\s,;]+/;

function parseKv(text: string, options: ParseOptions): ParseResult {
  const pairs: [string, string][] = [];
  for (const token of text.trim().split(KV_PAIR_SPLIT)) {
    if (token === '') continue;
    const at = token.search(/[=:]/);
    // Every token must be a pair: a banner such as "Sensor ready" is not readings, and guessing
    // would publish it as nonsense keys.
    if (at <= 0 || at === token.length - 1) return fail('parse', `not a key=value pair: ${JSON.stringify(token.slice(0, 40))}`);
    if (pairs.length === options.maxKeys) return fail('tooManyKeys', `more than ${options.maxKeys} keys in one line`);
    pairs.push([token.slice(0, at), token.slice(at + 1)]);
  }
  if (pairs.length === 0) return fail('parse', 'no key=value pairs');
  return { ok: true, readings: keyedReadings(pairs, options.wholeLine) };
}

function parseCsv(text: string, options: ParseOptions): ParseResult {
  const fields = text.split(options.separator);
  if (fields.length !== options.columns.length) {
    return fail('parse', `expected ${options.columns.length} fields, got ${fields.length}`);
  }
  const pairs: [string, string][] = [];
  for (let i = 0; i < fields.length; i++) {
    const value = (fields[i] as string).trim();
    if (value === '') continue; // a sensor that did not answer; an empty retained payload would delete the topic
    pairs.push([options.columns[i] as string, value]);
  }
  if (pairs.length === 0) return fail('parse', 'all fields empty');
  return { ok: true, readings: keyedReadings(pairs, options.wholeLine) };
}

function keyedReadings(pairs: [string, string][], wholeLine: boolean): Reading[] {
  if (!wholeLine) return pairs.map(([k, v]) => textReading(sanitiseKeySegment(k), v));
  // One JSON object for the line; keys keep their text (they are JSON keys, not topic levels).
  const parts = pairs.map(([k, v]) => `${JSON.stringify(k)}:${JSON_NUMBER.test(v) ? v : JSON.stringify(v)}`);
  const json = `{${parts.join(',')}}`;
  return [{ key: '', text: json, json }];
}
