import { z } from 'zod';
// Types, defaults and pure validation helpers only: importing these does not load `serialport`.
import { BAUD_RATES, SERIAL_DEFAULTS, publishesPerKey, type SerialPortOptions } from '../adapters/serial/options';
import { PORT_NAME_PATTERN, isSafeKey, templateError } from '../adapters/serial/topics';
import { redisSchema } from './redis';

/**
 * The one configuration schema: the TypeScript type (`Config`) and the validation both come from
 * it (DESIGN.md convention 4). Every key has a default, so an empty file — or no file — is a
 * complete configuration.
 */

const BYTE_UNITS: Record<string, number> = { B: 1, KB: 1000, MB: 1000 ** 2, GB: 1000 ** 3, KIB: 1024, MIB: 1024 ** 2, GIB: 1024 ** 3 };

const BYTE_SIZE_TEXT = /^\s*(\d+)\s*(B|KB|MB|GB|KiB|MiB|GiB)?\s*$/i;

/**
 * A size in bytes: a whole number, or a string such as "64KiB", "1MiB", "256MB". Strings are
 * converted before validation so that a bad value gets one clear message, not "invalid input".
 */
export const byteSize = z.preprocess(
  (value) => {
    if (typeof value !== 'string') return value;
    const match = BYTE_SIZE_TEXT.exec(value);
    if (match === null) return value;
    const unit = (match[2] ?? 'B').toUpperCase();
    return Number(match[1]) * (BYTE_UNITS[unit] ?? 1);
  },
  z.number({ error: 'expected a byte size such as 65536, "64KiB" or "1MiB"' }).int().nonnegative(),
);

const port = z.number().int().min(0).max(65535);

/** Host names and addresses that only this machine can reach (the secure default, issue 8). */
export function isLoopbackHost(host: string): boolean {
  const h = host.toLowerCase();
  return h === 'localhost' || h === '::1' || h === '[::1]' || /^(::ffff:)?127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(h);
}

const listenerHost = z.string().min(1).default('127.0.0.1');

/**
 * TLS material of `mqtts` and `wss` listeners (issue 8): PEM file paths, read at start and again on
 * SIGHUP (renewed certificates). `ca` verifies client certificates; `requireCertificate` refuses
 * clients without a valid one; `useIdentityAsUsername` takes the user name from its subject CN
 * (no password is then checked, as Mosquitto's use_identity_as_username).
 */
const tlsFields = {
  cert: z.string().min(1),
  key: z.string().min(1),
  ca: z.string().min(1).optional(),
  minVersion: z.enum(['TLSv1.2', 'TLSv1.3']).default('TLSv1.2'),
  requireCertificate: z.boolean().default(false),
  useIdentityAsUsername: z.boolean().default(false),
};

/** The path MQTT over WebSockets is served at (mqtt.js and MQTTX use /mqtt). */
const wsPath = z.string().regex(/^\/[^\s?#]*$/, 'expected an absolute URL path such as /mqtt').default('/mqtt');

export const listenerSchema = z
  .discriminatedUnion(
    'protocol',
    [
      z.strictObject({ protocol: z.literal('mqtt'), host: listenerHost, port: port.default(1883) }),
      z.strictObject({ protocol: z.literal('mqtts'), host: listenerHost, port: port.default(8883), ...tlsFields }),
      z.strictObject({ protocol: z.literal('ws'), host: listenerHost, port: port.default(8083), path: wsPath }),
      z.strictObject({ protocol: z.literal('wss'), host: listenerHost, port: port.default(8084), path: wsPath, ...tlsFields }),
    ],
    { error: 'expected protocol mqtt, mqtts, ws or wss' },
  )
  .superRefine((listener, ctx) => {
    if (listener.protocol !== 'mqtts' && listener.protocol !== 'wss') return;
    if (listener.requireCertificate && listener.ca === undefined) {
      ctx.addIssue({ code: 'custom', path: ['ca'], message: 'required with requireCertificate (the CA that signs client certificates)' });
    }
    if (listener.useIdentityAsUsername && !listener.requireCertificate) {
      ctx.addIssue({ code: 'custom', path: ['useIdentityAsUsername'], message: 'needs requireCertificate: true' });
    }
  });

/** MQTT's largest remaining length (268,435,455) plus the 5-byte fixed header. */
const MQTT_MAX_PACKET = 268_435_460;

export const limitsSchema = z
  .strictObject({
    maxPacketSize: byteSize.pipe(z.number().min(64).max(MQTT_MAX_PACKET)).default(1024 * 1024),
    maxConnections: z.number().int().min(1).default(10_000),
    maxInflight: z.number().int().min(1).max(65_535).default(20),
    receiveMaximum: z.number().int().min(1).max(65_535).default(65_535),
    topicAliasMaximum: z.number().int().min(0).max(65_535).default(10),
    maxKeepalive: z.number().int().min(0).max(65_535).default(0),
    maxQueued: z.number().int().min(0).default(1000),
    maxQueuedBytes: byteSize.pipe(z.number().min(0)).default(16 * 1024 * 1024),
    /** All session queues together (payloads plus 64 bytes per message): 10,000 sessions × 16 MiB would be 160 GB. */
    maxQueuedBytesTotal: byteSize.pipe(z.number().min(0)).default(128 * 1024 * 1024),
    maxSessions: z.number().int().min(1).default(10_000),
    maxTopicLevels: z.number().int().min(1).max(1000).default(64),
    maxSubscriptionsPerClient: z.number().int().min(1).default(1000),
    maxRetained: z.number().int().min(0).default(100_000),
    maxRetainedBytes: byteSize.pipe(z.number().min(0)).default(64 * 1024 * 1024),
    maxOutgoingBytes: byteSize.pipe(z.number().min(1024)).default(1024 * 1024),
    /** All sockets together: beyond it, slow readers (more than outgoingHighWater waiting) get no more QoS 0. */
    maxOutgoingBytesTotal: byteSize.pipe(z.number().min(0)).default(64 * 1024 * 1024),
    outgoingHighWater: byteSize.pipe(z.number().min(1024)).default(64 * 1024),
    backpressureTimeout: z.number().int().min(1).max(60_000).default(1000),
    connectTimeout: z.number().int().min(100).max(600_000).default(5_000),
    /**
     * Per source address (issue 8): concurrent connections, and new connections per second as a
     * token bucket of `connectionBurst`. Loopback addresses are exempt unless `exemptLoopback` is false.
     */
    perAddress: z
      .strictObject({
        maxConnections: z.number().int().min(1).default(256),
        connectionsPerSecond: z.number().min(0.01).default(50),
        connectionBurst: z.number().int().min(1).default(100),
        exemptLoopback: z.boolean().default(true),
        /** Source addresses remembered at once (least recently seen forgotten first). */
        maxTracked: z.number().int().min(16).max(1_000_000).default(10_000),
      })
      .prefault({}),
    /**
     * Failed logins (issue 8): after `freeAttempts` failures from one source address, each further
     * attempt from it waits initialDelay × 2^(failures − freeAttempts − 1), at most maxDelay (ms);
     * forgotten `forgetAfter` ms after the last failure, or at a successful login.
     */
    loginBackoff: z
      .strictObject({
        freeAttempts: z.number().int().min(0).max(1000).default(3),
        initialDelay: z.number().int().min(1).max(60_000).default(250),
        maxDelay: z.number().int().min(1).max(600_000).default(15_000),
        forgetAfter: z.number().int().min(1000).max(86_400_000).default(600_000),
      })
      .refine((b) => b.initialDelay <= b.maxDelay, { path: ['initialDelay'], message: 'must not be larger than maxDelay' })
      .prefault({}),
  })
  .superRefine((limits, ctx) => {
    if (limits.outgoingHighWater >= limits.maxOutgoingBytes) {
      ctx.addIssue({ code: 'custom', path: ['outgoingHighWater'], message: `must be smaller than maxOutgoingBytes (${limits.maxOutgoingBytes})` });
    }
  });

const BAUD_RATE_SET = new Set<number>(BAUD_RATES);

/** A topic template that may use {name} only (status, write, discovery prefix). */
function topicWithName(what: string) {
  return z.string().superRefine((value, ctx) => {
    const problem = templateError(value, { allowKey: false, needsKey: false });
    if (problem !== null) ctx.addIssue({ code: 'custom', message: `invalid ${what}: ${problem}` });
  });
}

const homeAssistantKeySchema = z.strictObject({
  name: z.string().min(1).optional(),
  unit: z.string().min(1).optional(),
  deviceClass: z.string().min(1).optional(),
  stateClass: z.enum(['measurement', 'total', 'total_increasing']).optional(),
  icon: z.string().min(1).optional(),
});

const homeAssistantSchema = z.strictObject({
  prefix: topicWithName('discovery prefix')
    .refine((v) => !v.includes('{'), 'placeholders are not allowed in the discovery prefix')
    .default(SERIAL_DEFAULTS.homeAssistantPrefix),
  deviceName: z.string().min(1).optional(),
  maxKeys: z.number().int().min(1).max(10_000).default(SERIAL_DEFAULTS.homeAssistantMaxKeys),
  keys: z.record(z.string(), homeAssistantKeySchema).default({}),
});

export const serialPortSchema = z
  .strictObject({
    name: z.string().regex(PORT_NAME_PATTERN, 'expected 1 to 64 letters, digits, "_" or "-" (the name is used as a topic level)'),
    path: z.string().min(1),
    baudRate: z
      .number()
      .refine((v) => BAUD_RATE_SET.has(v), `expected a standard baud rate: one of ${BAUD_RATES.join(', ')}`)
      .default(SERIAL_DEFAULTS.baudRate),
    dataBits: z.literal([5, 6, 7, 8]).default(SERIAL_DEFAULTS.dataBits),
    parity: z.enum(['none', 'even', 'odd', 'mark', 'space']).default(SERIAL_DEFAULTS.parity),
    stopBits: z.literal([1, 2]).default(SERIAL_DEFAULTS.stopBits),
    rtscts: z.boolean().default(SERIAL_DEFAULTS.rtscts),
    format: z.enum(['json', 'kv', 'csv', 'raw']).default(SERIAL_DEFAULTS.format),
    /** Default: sensors/{name}/{key} per key, sensors/{name} for raw or wholeLine (filled in below). */
    topic: z.string().optional(),
    qos: z.literal([0, 1, 2]).default(SERIAL_DEFAULTS.qos),
    retain: z.boolean().default(SERIAL_DEFAULTS.retain),
    delimiter: z.string().min(1).max(8).default(SERIAL_DEFAULTS.delimiter),
    maxLineLength: byteSize.pipe(z.number().min(16).max(65_536)).default(SERIAL_DEFAULTS.maxLineLength),
    columns: z.array(z.string()).optional(),
    separator: z.string().min(1).max(4).default(SERIAL_DEFAULTS.separator),
    wholeLine: z.boolean().default(SERIAL_DEFAULTS.wholeLine),
    wrap: z.boolean().default(SERIAL_DEFAULTS.wrap),
    userProperties: z.boolean().default(SERIAL_DEFAULTS.userProperties),
    maxKeys: z.number().int().min(1).max(1000).default(SERIAL_DEFAULTS.maxKeys),
    write: topicWithName('write topic').optional(),
    maxWriteQueue: z.number().int().min(0).max(10_000).default(SERIAL_DEFAULTS.maxWriteQueue),
    statusTopic: topicWithName('status topic').default(SERIAL_DEFAULTS.statusTopic),
    statusInterval: z.number().int().min(0).max(86_400).default(SERIAL_DEFAULTS.statusInterval),
    reconnect: z
      .strictObject({
        initialDelay: z.number().int().min(10).max(60_000).default(SERIAL_DEFAULTS.reconnect.initialDelay),
        maxDelay: z.number().int().min(100).max(3_600_000).default(SERIAL_DEFAULTS.reconnect.maxDelay),
      })
      .refine((r) => r.initialDelay <= r.maxDelay, { path: ['initialDelay'], message: 'must not be larger than maxDelay' })
      .prefault({}),
    // `homeAssistant: true` enables discovery with the defaults.
    homeAssistant: z.preprocess((v) => (v === true ? {} : v === false || v === null ? undefined : v), homeAssistantSchema.optional()),
  })
  // `when: () => true`: cross-field problems are reported together with field errors (convention 4:
  // every error at once), so the checks below must not trust the types of fields that failed.
  .superRefine(
    (p, ctx) => {
      const format: unknown = p.format;
      const perKey = format === 'json' || format === 'kv' || format === 'csv' ? publishesPerKey(format, p.wholeLine === true) : false;
      if (typeof p.topic === 'string') {
        const problem = templateError(p.topic, { allowKey: perKey, needsKey: perKey });
        if (problem !== null) ctx.addIssue({ code: 'custom', path: ['topic'], message: `invalid topic template: ${problem}` });
      }
      if (format === 'csv') {
        if (!Array.isArray(p.columns) || p.columns.length === 0) {
          ctx.addIssue({ code: 'custom', path: ['columns'], message: 'required when format is csv (the name of each field, in order)' });
        } else {
          const seen = new Set<unknown>();
          p.columns.forEach((column: unknown, i) => {
            if (typeof column === 'string' && !isSafeKey(column)) {
              ctx.addIssue({ code: 'custom', path: ['columns', i], message: "not a safe topic level (no '/', '+', '#', control characters or leading '$')" });
            }
            if (seen.has(column)) ctx.addIssue({ code: 'custom', path: ['columns', i], message: `duplicate column ${JSON.stringify(column)}` });
            seen.add(column);
          });
        }
      } else if (p.columns !== undefined) {
        ctx.addIssue({ code: 'custom', path: ['columns'], message: 'only used with format csv' });
      }
      if (typeof p.write === 'string' && p.write === p.statusTopic) {
        ctx.addIssue({ code: 'custom', path: ['write'], message: 'must differ from statusTopic' });
      }
    },
    { when: () => true },
  )
  .transform(
    (p): SerialPortOptions => ({
      ...p,
      topic: p.topic ?? (publishesPerKey(p.format, p.wholeLine) ? SERIAL_DEFAULTS.keyTopic : SERIAL_DEFAULTS.lineTopic),
      columns: p.columns ?? [],
    }),
  );

/** Port names are topic levels and ids, paths are opened exclusively, topics must not collide. */
const serialSchema = z
  .array(serialPortSchema)
  .default([])
  .superRefine(
    (ports, ctx) => {
      if (!Array.isArray(ports)) return;
      const unique = (field: 'name' | 'path' | 'statusTopic' | 'write', skipWithName: boolean) => {
        const seen = new Map<string, number>();
        (ports as unknown[]).forEach((entry, i) => {
          const p = entry !== null && typeof entry === 'object' ? (entry as Record<string, unknown>) : undefined;
          const value = p?.[field];
          if (typeof value !== 'string') return;
          // With {name} the topics differ whenever the names do (duplicate names are reported above).
          if (skipWithName && value.includes('{name}')) return;
          const first = seen.get(value as string);
          if (first !== undefined) ctx.addIssue({ code: 'custom', path: [i, field], message: `duplicate ${field} ${JSON.stringify(value)} (also serial[${first}])` });
          else seen.set(value as string, i);
        });
      };
      unique('name', false);
      unique('path', false);
      unique('statusTopic', true);
      unique('write', true);
    },
    { when: () => true },
  );

/**
 * Storage (issue 4): the SQLite database of adapters/sqlite. `sync` is SQLite's `synchronous` in
 * WAL mode — what a power cut may cost (README "Storage"); `flushInterval` is the group-commit
 * window: appends within it share one transaction (0 = one transaction per append).
 */
export const storageSchema = z.strictObject({
  path: z.string().min(1).default('./data/edgeway.db'),
  sync: z.enum(['normal', 'full']).default('normal'),
  flushInterval: z.number().int().min(0).max(10_000).default(50),
  outbox: z
    .strictObject({
      maxMessages: z.number().int().min(1).max(1_000_000_000).default(1_000_000),
      maxBytes: byteSize.pipe(z.number().min(1024)).default(256 * 1024 * 1024),
      whenFull: z.enum(['drop-oldest', 'drop-new']).default('drop-oldest'),
    })
    .prefault({}),
});

/**
 * Optional (issue 6): an HTTP endpoint with `/metrics` (Prometheus text format) and `/healthz`.
 * Off without the section; `metrics: {}` turns it on at the defaults.
 */
export const metricsSchema = z.strictObject({
  host: z.string().min(1).default('127.0.0.1'),
  port: z.number().int().min(1).max(65_535).default(9883),
  health: z
    .strictObject({
      /** Seconds: an uplink backlog whose oldest message waited longer makes /healthz unhealthy. */
      maxBacklogAge: z.number().int().min(1).max(31_536_000).default(3600),
    })
    .prefault({}),
});

/**
 * Authentication and authorisation (issue 8). `passwordFile`: `edgeway passwd` or mosquitto_passwd
 * format; `aclFile`: Mosquitto acl_file syntax. `allowAnonymous` defaults to false with a password
 * file, true without one — and then only loopback listeners may start (configSchema below).
 */
export const authSchema = z.strictObject({
  passwordFile: z.string().min(1).optional(),
  aclFile: z.string().min(1).optional(),
  allowAnonymous: z.boolean().optional(),
});

export const configSchema = z
  .strictObject({
    listeners: z.array(listenerSchema).min(1).default([{ protocol: 'mqtt', host: '127.0.0.1', port: 1883 }]),
    limits: limitsSchema.prefault({}),
    sys: z.strictObject({ interval: z.number().int().min(0).max(86_400).default(10) }).prefault({}),
    log: z.strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') }).prefault({}),
    serial: serialSchema,
    storage: storageSchema.prefault({}),
    /** Optional: without it nothing about Redis runs. */
    redis: redisSchema.optional(),
    metrics: metricsSchema.optional(),
    auth: authSchema.optional(),
  })
  .superRefine((config, ctx) => {
    // Secure default (issue 8, as Mosquitto 2): a listener other machines can reach needs
    // authentication — users, client certificates, or anonymous access allowed explicitly.
    const auth = config.auth;
    config.listeners.forEach((listener, i) => {
      if (isLoopbackHost(listener.host) || auth?.passwordFile !== undefined || auth?.allowAnonymous === true) return;
      if ((listener.protocol === 'mqtts' || listener.protocol === 'wss') && listener.requireCertificate) return;
      ctx.addIssue({
        code: 'custom',
        path: ['listeners', i, 'host'],
        message:
          `${listener.host} is reachable from the network but no authentication is configured: add users with ` +
          `"edgeway passwd /etc/edgeway/passwd USER" and set auth.passwordFile, or set auth.allowAnonymous: true ` +
          `to accept anyone who can reach it`,
      });
    });
    // Across sections: a serial topic deeper than limits.maxTopicLevels would be refused by the
    // broker at run time (or, for a write topic, stop the start with a stack trace).
    const max = config.limits.maxTopicLevels;
    config.serial.forEach((port, i) => {
      const templates: [keyof typeof port, string | undefined][] = [
        ['topic', port.topic],
        ['statusTopic', port.statusTopic],
        ['write', port.write],
      ];
      for (const [key, template] of templates) {
        if (template === undefined) continue;
        // {key} adds at least one level; {name} is a single safe level.
        const levels = template.split('/').length;
        if (levels > max) {
          ctx.addIssue({ code: 'custom', path: ['serial', i, key], message: `has ${levels} topic levels, more than limits.maxTopicLevels (${max})` });
        }
      }
    });
  });

export type Config = z.output<typeof configSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
export type SerialPortConfig = z.output<typeof serialPortSchema>;
export type StorageConfig = z.output<typeof storageSchema>;
export type MetricsConfig = z.output<typeof metricsSchema>;
export type AuthConfig = z.output<typeof authSchema>;
export type { RedisConfig } from './redis';
