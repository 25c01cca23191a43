import { z } from 'zod';

/**
 * The one configuration schema: the TypeScript type (`Config`) and the validation both come from
 * it (DESIGN.md convention 4). Every key has a default, so an empty file — or no file — is a
 * complete configuration. Later issues add sections (storage, serial, redis, auth, metrics) here.
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

export const listenerSchema = z.strictObject({
  protocol: z.literal('mqtt'),
  host: z.string().min(1).default('127.0.0.1'),
  port: port.default(1883),
});

/** MQTT's largest remaining length (268,435,455) plus the 5-byte fixed header. */
const MQTT_MAX_PACKET = 268_435_460;

export const limitsSchema = z
  .strictObject({
    maxPacketSize: byteSize.pipe(z.number().min(64).max(MQTT_MAX_PACKET)).default(1024 * 1024),
    maxConnections: z.number().int().min(1).default(10_000),
    maxInflight: z.number().int().min(1).max(65_535).default(20),
    maxQueued: z.number().int().min(0).default(1000),
    maxQueuedBytes: byteSize.pipe(z.number().min(0)).default(16 * 1024 * 1024),
    maxSessions: z.number().int().min(1).default(10_000),
    maxTopicLevels: z.number().int().min(1).max(1000).default(64),
    maxSubscriptionsPerClient: z.number().int().min(1).default(1000),
    maxRetained: z.number().int().min(0).default(100_000),
    maxRetainedBytes: byteSize.pipe(z.number().min(0)).default(64 * 1024 * 1024),
    maxOutgoingBytes: byteSize.pipe(z.number().min(1024)).default(1024 * 1024),
    outgoingHighWater: byteSize.pipe(z.number().min(1024)).default(64 * 1024),
    backpressureTimeout: z.number().int().min(1).max(60_000).default(1000),
    connectTimeout: z.number().int().min(100).max(600_000).default(10_000),
  })
  .superRefine((limits, ctx) => {
    if (limits.outgoingHighWater >= limits.maxOutgoingBytes) {
      ctx.addIssue({ code: 'custom', path: ['outgoingHighWater'], message: `must be smaller than maxOutgoingBytes (${limits.maxOutgoingBytes})` });
    }
  });

export const configSchema = z.strictObject({
  listeners: z.array(listenerSchema).min(1).default([{ protocol: 'mqtt', host: '127.0.0.1', port: 1883 }]),
  limits: limitsSchema.prefault({}),
  sys: z.strictObject({ interval: z.number().int().min(0).max(86_400).default(10) }).prefault({}),
  log: z.strictObject({ level: z.enum(['debug', 'info', 'warn', 'error']).default('info') }).prefault({}),
});

export type Config = z.output<typeof configSchema>;
export type ListenerConfig = z.output<typeof listenerSchema>;
