import { readFileSync } from 'node:fs';
import Redis, { type RedisOptions } from 'ioredis';
import { backoffDelay, errorMessage, RateLimitedLog, type Logger } from '../../gateway/broker';
import { makeStringPrototypeFast } from './fast-string-prototype';
import type { RedisSettings } from './settings';

// ioredis, imported above, has just made String.prototype slow for the whole process: see there.
makeStringPrototypeFast();

/**
 * One ioredis connection with edgeway's rules (issue 5, "Disconnected is normal"):
 * - no offline queue (`enableOfflineQueue: false`): ioredis' own queue is unbounded and drops
 *   what Redis rejects; a command sent while the link is down fails at once and the caller, who
 *   has the data durably in the outbox, tries again later;
 * - no silent re-send of commands lost with a connection (`maxRetriesPerRequest: 0`): the caller
 *   decides, with idempotent writes;
 * - every command bounded by `commandTimeout`, so a Redis that hangs (paused, overloaded) looks
 *   like one that is down;
 * - reconnect forever, with capped exponential back-off and jitter (a fleet of gateways must not
 *   reconnect in step after a central restart);
 * - RESP2, which every Redis with streams (5.0+) speaks.
 * Errors are logged at a bounded rate, with the URL's password removed.
 */
export function createRedisConnection(settings: RedisSettings, role: string, logger: Logger, extra: RedisOptions = {}): Redis {
  const { reconnect } = settings;
  const options: RedisOptions = {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: settings.commandTimeout,
    connectTimeout: settings.connectTimeout,
    protocol: 2,
    connectionName: `edgeway-${settings.gatewayId}-${role}`,
    retryStrategy: (attempt) => backoff(attempt, reconnect.initialDelay, reconnect.maxDelay),
    reconnectOnError: () => false,
    ...credentials(settings),
    ...extra,
  };
  const redis =
    settings.sentinels !== undefined
      ? new Redis({
          ...options,
          sentinels: [...settings.sentinels],
          name: settings.name,
          // Without it ioredis talks plain TCP to the master it found, password included.
          ...(options.tls === undefined ? {} : { enableTLSForSentinelMode: true, sentinelTLS: options.tls }),
        })
      : new Redis(settings.url, options);
  const errors = new RateLimitedLog((msg, fields) => logger.warn(msg, fields));
  redis.on('error', (err: Error) => {
    errors.emit('redis: connection problem; retrying', { role, url: redactUrl(settings.url), error: describeRedisError(err) });
  });
  return redis;
}

/** Milliseconds before attempt `attempt` (1, 2, …, as ioredis counts): the shared back-off with ±25 % jitter. */
export function backoff(attempt: number, initialDelay: number, maxDelay: number): number {
  return backoffDelay(attempt - 1, initialDelay, maxDelay, 0.25);
}

function credentials(settings: RedisSettings): RedisOptions {
  const options: RedisOptions = {};
  if (settings.username !== undefined) options.username = settings.username;
  if (settings.password !== undefined) options.password = settings.password;
  const secure = isTlsUrl(settings.url) || settings.tls !== undefined;
  if (secure) {
    const ca = settings.tls?.ca;
    options.tls = {
      rejectUnauthorized: settings.tls?.rejectUnauthorized ?? true,
      ...(ca === undefined ? {} : { ca: readFileSync(ca) }),
    };
  }
  return options;
}

function isTlsUrl(text: string): boolean {
  try {
    return new URL(text).protocol === 'rediss:'; // URL lower-cases the scheme
  } catch {
    return false;
  }
}

/** The URL without its password, for logs (credentials are never logged). */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.password !== '') url.password = '***';
    return url.toString();
  } catch {
    return '(invalid URL)';
  }
}

/** A clear reason for the log: authentication and reachability problems named as such. */
export function describeRedisError(err: unknown): string {
  const message = errorMessage(err);
  if (/WRONGPASS|NOAUTH|invalid password|invalid username-password/i.test(message)) return `authentication failed: ${message}`;
  if (/ECONNREFUSED/.test(message)) return `connection refused (is Redis running there?): ${message}`;
  if (/ENOTFOUND|EAI_AGAIN/.test(message)) return `host not found: ${message}`;
  if (/ETIMEDOUT|Command timed out|connect ETIMEDOUT/i.test(message)) return `no answer in time: ${message}`;
  if (/NOPERM/.test(message)) return `not permitted for this Redis user: ${message}`;
  if (/certificate|SSL|TLS|handshake/i.test(message)) return `TLS problem (check tls.ca and the server's certificate): ${message}`;
  return message;
}
