/**
 * How the Redis adapter names the publisher of what it publishes locally (the `source` of
 * GatewayContext.publish). No dependency: the composition root reads it without loading ioredis.
 */

/** Messages from another gateway of the cluster: `cluster:<origin gateway id>`. */
export const CLUSTER_SOURCE_PREFIX = 'cluster:';
/** The adapter's own messages: its status topic and downlink commands. */
const OWN_SOURCE_PREFIX = 'redis:';
export const STATUS_SOURCE = `${OWN_SOURCE_PREFIX}status`;
export const DOWNLINK_SOURCE = `${OWN_SOURCE_PREFIX}downlink`;

/**
 * Never sent to Redis again, neither up the stream nor to the cluster: messages from another
 * gateway (they went up, and out, through it) and the adapter's own (its status — sending it
 * would change it again — and commands, which came from the central side).
 */
export function cameThroughRedis(source: string): boolean {
  return source.startsWith(CLUSTER_SOURCE_PREFIX) || source.startsWith(OWN_SOURCE_PREFIX);
}
