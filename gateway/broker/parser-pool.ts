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
  _parseProperties(...args: unknown[]): unknown;
  /** Set by rejectMalformedUtf8 while MQTT 5 properties are parsed. */
  inProperties: boolean;
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
  const parser = rejectMalformedUtf8(createParser() as unknown as ParserInternals);
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
