import { z } from 'zod';
import { topicFilterError, topicNameError } from '../gateway/broker/topic';

/**
 * The optional `redis` section (issue 5): the uplink to a central Redis, commands coming down,
 * and several gateways sharing messages. Without it nothing about Redis runs at all.
 * `{gatewayId}` in the stream, channel and topic templates is replaced by the gateway id.
 */

const port = z.number().int().min(1).max(65535);

/** A gateway id is part of Redis keys and of an MQTT topic level: keep it to safe characters. */
export const GATEWAY_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/;

const topicFilter = z.string().superRefine((filter, ctx) => {
  const problem = topicFilterError(filter, 1000);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: `invalid topic filter ${JSON.stringify(filter)}: ${problem.message}` });
});

const redisUrl = z.string().superRefine((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'expected a URL such as redis://host:6379 or rediss://host:6380' });
    return;
  }
  if (url.protocol !== 'redis:' && url.protocol !== 'rediss:') ctx.addIssue({ code: 'custom', message: `expected redis:// or rediss://, got ${url.protocol}//` });
  if (url.hostname === '') ctx.addIssue({ code: 'custom', message: 'the URL names no host' });
  // ioredis reads options (a password, too) from the query string; logs would show them.
  if (url.search !== '') ctx.addIssue({ code: 'custom', message: 'no query string: put the password in the URL before the host (redis://user:password@host) or in redis.password' });
});

const keyTemplate = (fallback: string) => z.string().min(1).max(512).default(fallback);

export const redisSchema = z
  .strictObject({
    /** redis://[user:password@]host:port[/db]; rediss:// for TLS. */
    url: redisUrl,
    username: z.string().min(1).optional(),
    password: z.string().min(1).optional(),
    tls: z
      .strictObject({
        /** PEM file of the CA that signed the server's certificate (a private CA). */
        ca: z.string().min(1).optional(),
        rejectUnauthorized: z.boolean().default(true),
      })
      .optional(),
    /** Redis Sentinel: the sentinels to ask, and the master's name. The URL's host is then ignored. */
    sentinels: z.array(z.strictObject({ host: z.string().min(1), port })).min(1).optional(),
    name: z.string().min(1).optional(),
    /** Names this gateway in keys, entries and the cluster; default: the host name. */
    gatewayId: z.string().regex(GATEWAY_ID_PATTERN, 'letters, digits, _ . and -, at most 64, starting with a letter or digit').optional(),
    connectTimeout: z.number().int().min(100).max(120_000).default(5000),
    /** A command without a reply within this many ms fails (the link is treated as down). */
    commandTimeout: z.number().int().min(1000).max(120_000).default(5000),
    reconnect: z
      .strictObject({
        initialDelay: z.number().int().min(10).max(600_000).default(500),
        maxDelay: z.number().int().min(10).max(3_600_000).default(30_000),
      })
      .prefault({}),
    /** Retained JSON status of the uplink (state, backlog, age of the oldest waiting message). */
    statusTopic: z.string().min(1).default('edgeway/{gatewayId}/uplink'),
    uplink: z
      .strictObject({
        topics: z.array(topicFilter).default(['sensors/#']),
        stream: keyTemplate('edgeway:uplink:{gatewayId}'),
        /** Approximate trimming of the stream (XADD MAXLEN ~). */
        maxLen: z.number().int().min(1).max(1_000_000_000_000).default(10_000_000),
        batchSize: z.number().int().min(1).max(10_000).default(500),
        /** Messages per second at most while draining; 0 = as fast as Redis takes them. */
        replayRate: z.number().min(0).max(10_000_000).default(0),
      })
      .prefault({}),
    downlink: z
      .strictObject({
        enabled: z.boolean().default(true),
        stream: keyTemplate('edgeway:downlink:{gatewayId}'),
      })
      .prefault({}),
    cluster: z
      .strictObject({
        enabled: z.boolean().default(false),
        channel: keyTemplate('edgeway:cluster'),
      })
      .prefault({}),
  })
  // `when: () => true`: cross-field problems are reported together with field errors (every error
  // at once), so these checks must not trust the types of fields that failed.
  .superRefine(
    (redis, ctx) => {
      const r = redis as Partial<Record<string, unknown>> & { reconnect?: unknown; uplink?: unknown; downlink?: unknown };
      if (r.sentinels !== undefined && r.name === undefined) ctx.addIssue({ code: 'custom', path: ['name'], message: 'required with sentinels: the name of the master' });
      if (r.name !== undefined && r.sentinels === undefined) ctx.addIssue({ code: 'custom', path: ['sentinels'], message: 'required with name' });
      const reconnect = r.reconnect as { initialDelay?: unknown; maxDelay?: unknown } | undefined;
      if (typeof reconnect?.initialDelay === 'number' && typeof reconnect.maxDelay === 'number' && reconnect.initialDelay > reconnect.maxDelay) {
        ctx.addIssue({ code: 'custom', path: ['reconnect', 'initialDelay'], message: 'must not exceed reconnect.maxDelay' });
      }
      if (typeof r.statusTopic === 'string') {
        const problem = topicNameError(r.statusTopic.replaceAll('{gatewayId}', 'id'), 1000);
        if (problem !== null) ctx.addIssue({ code: 'custom', path: ['statusTopic'], message: `not a valid topic: ${problem.message}` });
        else if (r.statusTopic.startsWith('$')) ctx.addIssue({ code: 'custom', path: ['statusTopic'], message: 'must not start with $' });
      }
      const up = (r.uplink as { stream?: unknown } | undefined)?.stream;
      const down = (r.downlink as { stream?: unknown } | undefined)?.stream;
      if (typeof up === 'string' && up === down) ctx.addIssue({ code: 'custom', path: ['downlink', 'stream'], message: 'must differ from uplink.stream' });
    },
    { when: () => true },
  );

export type RedisConfig = z.output<typeof redisSchema>;
