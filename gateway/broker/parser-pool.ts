import { isUtf8 } from 'node:buffer';
import { parser as createParser, type Packet } from 'mqtt-packet';

/**
 * mqtt-packet parsers, lent to connections only while a packet is partly received.
 *
 * Why: a parser is heavy (an EventEmitter, a BufferList *stream* with its own readable and
 * writable state, a Packet, and it keeps the whole CONNECT packet as its settings) — about 2 KB
 * of heap. Most connections of a gateway are idle sensors: between packets a parser holds no
 * state at all, so it goes back to the pool and an idle connection costs no parser. The target is
 * ≤ 8 KB per idle connection (issue 2).
 *
 * This relies on mqtt-packet 9's parser internals (`_stateCounter`, `_list`, `packet`, `settings`,
 * `_parseString`), which is why package.json pins mqtt-packet to 9.0.x; the unit test
 * test/unit/parser-pool.test.ts feeds packets split at every byte to catch a change.
 */

/** What the pool needs to know about the party a parser is lent to. */
export interface ParserOwner {
  onParsedPacket(packet: Packet): void;
  onParseError(err: Error): void;
}

interface ParserInternals {
  parse(buf: Buffer): number;
  on(event: 'packet', listener: (packet: Packet) => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  settings: { protocolVersion?: number };
  packet: { cmd?: string; length: number; clientId?: string };
  error: Error | null;
  _stateCounter: number;
  _pos: number;
  _list: { length: number; slice(start: number, end: number): Buffer };
  _parseString(...args: unknown[]): string | null;
  _parseBuffer(...args: unknown[]): Buffer | null;
  _parseNum(): number;
  _parse4ByteNum(): number;
  _parseByte(): number | undefined;
  _parseVarByteNum(...args: unknown[]): unknown;
  _parsePayload(): boolean;
  _parseProperties(...args: unknown[]): unknown;
  /** Set by rejectMalformedUtf8 while MQTT 5 properties are parsed. */
  inProperties: boolean;
  /** Set by boundFieldsToPacket while the variable header and payload are parsed. */
  inPayload: boolean;
  _emitError(err: Error): void;
  /** Set by the pool: whom this parser's events go to. */
  owner: ParserOwner | null;
}

export type PooledParser = ParserInternals;

/** Free parsers kept for reuse; beyond this they are left to the garbage collector. */
const MAX_FREE = 256;

export class ParserPool {
  private readonly free: ParserInternals[] = [];

  /** Lends a parser to `owner`, set up for `protocolVersion` (3, 4 or 5; 0 before CONNECT). */
  acquire(owner: ParserOwner, protocolVersion: number): PooledParser {
    const parser = this.free.pop() ?? newParser();
    parser.owner = owner;
    // After CONNECT mqtt-packet parses per protocol version; before it, the CONNECT itself says.
    parser.settings = protocolVersion === 0 ? {} : { protocolVersion };
    return parser;
  }

  /** True when the parser holds no partial packet and can be given back. */
  static isIdle(parser: PooledParser): boolean {
    return parser.error === null && parser._stateCounter === 0 && parser._list.length === 0 && parser.packet.length === -1;
  }

  /** Returns an idle parser to the pool; a parser in any other state is simply dropped. */
  release(parser: PooledParser): void {
    parser.owner = null;
    if (ParserPool.isIdle(parser) && this.free.length < MAX_FREE) {
      parser.settings = {};
      this.free.push(parser);
    }
  }

  /** Bytes announced by the packet being received (remaining length), or -1 if not yet known. */
  static announcedLength(parser: PooledParser): number {
    return parser.packet.length;
  }
}

function newParser(): ParserInternals {
  const parser = boundFieldsToPacket(rejectMalformedUtf8(createParser() as unknown as ParserInternals));
  parser.owner = null;
  // One pair of listeners per parser for its whole life, dispatching to the current owner,
  // instead of a pair of closures per connection.
  parser.on('packet', function (this: ParserInternals, packet: Packet) {
    this.owner?.onParsedPacket(packet);
  });
  parser.on('error', function (this: ParserInternals, err: Error) {
    this.owner?.onParseError(err);
  });
  return parser;
}

/**
 * [MQTT-1.5.3-1] a packet containing ill-formed UTF-8 closes the connection. mqtt-packet decodes
 * strings with Buffer#toString, which silently substitutes U+FFFD, and a length comparison after
 * the fact cannot catch every case: a truncated 4-byte sequence (F0 9F 98) becomes one 3-byte
 * U+FFFD. So the raw bytes of each string are checked while parsing, and an ill-formed one is a
 * parse error (the packet is not emitted; the broker closes the connection). Only strings that
 * decoded to something containing U+FFFD are re-checked, so the common path costs one `includes`.
 * In CONNECT the client identifier is left to the handler, which refuses one containing U+FFFD
 * with CONNACK 2 before closing; the MQTT 5 properties (parsed before it), will topic and user
 * name are checked here.
 */
function rejectMalformedUtf8(parser: ParserInternals): ParserInternals {
  const parseString = parser._parseString;
  const parseProperties = parser._parseProperties;
  // This is the only UTF-8 check for strings mqtt-packet decodes: fail loudly, not silently, if a
  // future mqtt-packet renames it (package.json pins 9.0.x for that reason).
  if (typeof parseString !== 'function') throw new Error('mqtt-packet internals changed: parser._parseString is missing');
  if (typeof parseProperties !== 'function') throw new Error('mqtt-packet internals changed: parser._parseProperties is missing');
  parser.inProperties = false;
  parser._parseProperties = function (this: ParserInternals, ...args: unknown[]): unknown {
    this.inProperties = true;
    try {
      return parseProperties.apply(this, args);
    } finally {
      this.inProperties = false;
    }
  };
  parser._parseString = function (this: ParserInternals, ...args: unknown[]): string | null {
    const start = this._pos + 2; // after the two-byte length prefix
    const result = parseString.apply(this, args);
    // In CONNECT, the protocol name and the client id (parsed before `clientId` is set) are left
    // to the CONNECT handler; MQTT 5 property strings, the will topic and user name are checked here.
    const exempt = this.packet.cmd === 'connect' && this.packet.clientId === undefined && !this.inProperties;
    if (result !== null && !exempt && result.includes('\uFFFD') && !isUtf8(this._list.slice(start, this._pos))) {
      this._emitError(new Error('malformed UTF-8 string [MQTT-1.5.3-1]'));
    }
    return result;
  };
  return parser;
}

const TOO_SHORT = 'malformed packet: a field runs past the end of the packet';

/**
 * Every field must lie within the packet's remaining length, and every field the packet announces
 * must be there (MQTT 5.0 section 4.13, "Malformed Packet"). mqtt-packet bounds strings and binary
 * data by the packet but not numbers, bytes or variable byte integers: it reads them from whatever
 * is buffered — the next packet's bytes — or, at the end of the buffer, returns -1, undefined or
 * false and carries on. A PUBREL of remaining length 0 came out with packet identifier -1, and
 * encoding its PUBCOMP threw: the gateway crashed (found by fuzzing). And a string or binary
 * property too long for its packet came out as null (a Response Topic of null). Here such a read
 * is a parse error instead: the packet is not emitted, and the broker closes the connection.
 */
function boundFieldsToPacket(parser: ParserInternals): ParserInternals {
  const { _parsePayload: parsePayload, _parseNum: parseNum, _parse4ByteNum: parse4ByteNum, _parseByte: parseByte, _parseVarByteNum: parseVarByteNum, _parseBuffer: parseBuffer } = parser;
  // Fail loudly if a future mqtt-packet renames them (package.json pins 9.0.x for that reason).
  for (const fn of [parsePayload, parseNum, parse4ByteNum, parseByte, parseVarByteNum, parseBuffer]) {
    if (typeof fn !== 'function') throw new Error('mqtt-packet internals changed: a parser field reader is missing');
  }
  parser.inPayload = false;
  /** Whether `size` more bytes fit in the packet; if not, the parse fails. */
  const fits = (p: ParserInternals, size: number): boolean => {
    if (!p.inPayload || p._pos + size <= p.packet.length) return true;
    if (p.error === null) p._emitError(new Error(TOO_SHORT));
    return false;
  };
  parser._parsePayload = function (this: ParserInternals): boolean {
    this.inPayload = true;
    let done: boolean;
    try {
      done = parsePayload.call(this);
    } finally {
      this.inPayload = false;
    }
    // A variable byte integer (a property) or a field read from beyond the packet's end.
    if (done && this.error === null && this._pos > this.packet.length) this._emitError(new Error(TOO_SHORT));
    return done;
  };
  parser._parseNum = function (this: ParserInternals): number {
    return fits(this, 2) ? parseNum.call(this) : -1;
  };
  parser._parse4ByteNum = function (this: ParserInternals): number {
    return fits(this, 4) ? parse4ByteNum.call(this) : -1;
  };
  parser._parseByte = function (this: ParserInternals): number | undefined {
    return fits(this, 1) ? parseByte.call(this) : undefined;
  };
  parser._parseVarByteNum = function (this: ParserInternals, ...args: unknown[]): unknown {
    const result = parseVarByteNum.apply(this, args);
    // Outside the payload this reads the remaining length, which may simply not have arrived yet.
    if (this.inPayload && result === false && this.error === null) this._emitError(new Error(TOO_SHORT));
    return result;
  };
  // Strings are checked in rejectMalformedUtf8's wrapper; a null one is fatal only in properties
  // (elsewhere mqtt-packet reports it itself), and so is binary data.
  const parseString = parser._parseString;
  parser._parseString = function (this: ParserInternals, ...args: unknown[]): string | null {
    const result = parseString.apply(this, args);
    if (result === null && this.inProperties && this.error === null) this._emitError(new Error(TOO_SHORT));
    return result;
  };
  parser._parseBuffer = function (this: ParserInternals, ...args: unknown[]): Buffer | null {
    const result = parseBuffer.apply(this, args);
    if (result === null && this.inProperties && this.error === null) this._emitError(new Error(TOO_SHORT));
    return result;
  };
  return parser;
}
