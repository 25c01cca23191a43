/**
 * The options of one serial port, as the adapter needs them. config/schema.ts validates the YAML
 * into exactly this shape (the compiler checks that the two agree), so the adapter never sees an
 * unvalidated value and never imports from config/ (DESIGN.md "Layering").
 */

/**
 * Baud rates the Linux termios interface names (B50 … B4000000). Other rates would need the
 * non-standard BOTHER path, which USB-serial chips support unevenly; a typo such as 11520 is far
 * more likely than a genuinely exotic rate, so the list is closed.
 */
export const BAUD_RATES = [
  50, 75, 110, 134, 150, 200, 300, 600, 1200, 1800, 2400, 4800, 9600, 19200, 38400, 57600, 115200, 230400, 460800, 500000, 576000,
  921600, 1000000, 1152000, 1500000, 2000000, 2500000, 3000000, 3500000, 4000000,
] as const;

export type BaudRate = (typeof BAUD_RATES)[number];
export type SerialFormat = 'json' | 'kv' | 'csv' | 'raw';
export type Parity = 'none' | 'even' | 'odd' | 'mark' | 'space';

/** Per-key hints for Home Assistant (unit, device class …); all optional. */
export interface HomeAssistantKeyOptions {
  readonly name?: string | undefined;
  readonly unit?: string | undefined;
  readonly deviceClass?: string | undefined;
  readonly stateClass?: 'measurement' | 'total' | 'total_increasing' | undefined;
  readonly icon?: string | undefined;
}

export interface HomeAssistantOptions {
  /** Discovery prefix; Home Assistant's default is `homeassistant`. */
  readonly prefix: string;
  /** Device name shown in Home Assistant; defaults to the port name. */
  readonly deviceName?: string | undefined;
  /** Discovery configs published per port at most (one per key seen); bounds memory and retained topics. */
  readonly maxKeys: number;
  readonly keys: Readonly<Record<string, HomeAssistantKeyOptions>>;
}

export interface ReconnectOptions {
  /** First retry delay after a failed open or a lost port, in ms. */
  readonly initialDelay: number;
  /** Cap of the exponential back-off, in ms. */
  readonly maxDelay: number;
}

export interface SerialPortOptions {
  /** Used in topics, logs and the status topic; a safe topic level. */
  readonly name: string;
  /** Device path, reopened by this same path after an unplug (a /dev/serial/by-id/ link follows the device). */
  readonly path: string;
  readonly baudRate: number;
  readonly dataBits: 5 | 6 | 7 | 8;
  readonly parity: Parity;
  readonly stopBits: 1 | 2;
  readonly rtscts: boolean;
  readonly format: SerialFormat;
  /** Topic template with `{name}` and (for per-key formats) `{key}`. */
  readonly topic: string;
  readonly qos: 0 | 1 | 2;
  readonly retain: boolean;
  /** Line delimiter; with "\n" a trailing "\r" is stripped as well. */
  readonly delimiter: string;
  /** Longest line in bytes (delimiter excluded); longer lines are dropped. */
  readonly maxLineLength: number;
  /** csv: the column names, in order. */
  readonly columns: readonly string[];
  /** csv: the field separator. */
  readonly separator: string;
  /** Publish each line as one message (json: the object; kv/csv: a JSON object) instead of one per key. */
  readonly wholeLine: boolean;
  /** Wrap each payload as {"value":…,"ts":<ms since epoch at arrival>}. */
  readonly wrap: boolean;
  /**
   * Attach MQTT 5 User Properties to each reading: `port` (the port's name) and `arrivedAt` (ms
   * since the epoch when its line arrived). MQTT 5 subscribers see them; 3.1.1 ones do not.
   */
  readonly userProperties: boolean;
  /** Most messages one line may produce; a line with more keys is dropped. */
  readonly maxKeys: number;
  /** Topic whose messages are written to the device (with the delimiter); `{name}` allowed. */
  readonly write?: string | undefined;
  /** Commands held while the port is offline or busy; the oldest is dropped beyond it. */
  readonly maxWriteQueue: number;
  /** Retained JSON status topic; `{name}` allowed. */
  readonly statusTopic: string;
  /** Seconds between status re-publications while counters change; 0 = only on online/offline. */
  readonly statusInterval: number;
  readonly reconnect: ReconnectOptions;
  readonly homeAssistant?: HomeAssistantOptions | undefined;
}

/** Defaults shared by the schema and the adapter's tests. */
export const SERIAL_DEFAULTS = {
  baudRate: 9600,
  dataBits: 8,
  parity: 'none',
  stopBits: 1,
  rtscts: false,
  format: 'raw',
  keyTopic: 'sensors/{name}/{key}',
  lineTopic: 'sensors/{name}',
  qos: 0,
  retain: false,
  delimiter: '\n',
  maxLineLength: 1024,
  separator: ',',
  wholeLine: false,
  wrap: false,
  userProperties: false,
  maxKeys: 64,
  maxWriteQueue: 64,
  statusTopic: 'edgeway/serial/{name}/status',
  statusInterval: 30,
  reconnect: { initialDelay: 250, maxDelay: 5000 },
  homeAssistantPrefix: 'homeassistant',
  homeAssistantMaxKeys: 256,
} as const;

/** True when the format publishes one message per key (and the topic needs `{key}`). */
export function publishesPerKey(format: SerialFormat, wholeLine: boolean): boolean {
  return format !== 'raw' && !wholeLine;
}
