/**
 * Public API of the Redis adapter (adapters/redis, issue 5). It imports from gateway/broker's
 * public index only; gateway/app.ts wires it when the config has a `redis` section.
 */
export { RedisAdapter, type RedisAdapterStats } from './redis-adapter';
export { resolveRedisSettings, type RedisSettings } from './settings';
export { CLUSTER_SOURCE_PREFIX, cameThroughRedis } from './sources';
export type { StateStore, UplinkState, UplinkStats } from './uplink';
export type { DownlinkStats } from './downlink';
export type { ClusterStats } from './cluster';
export { parseStreamId, type StreamId } from './stream-id';
export { MemoryStateStore } from './memory-state-store';
export { backoff, redactUrl, describeRedisError } from './connection';
