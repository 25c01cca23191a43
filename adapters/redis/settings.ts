/**
 * What the Redis adapter needs, resolved from the `redis` config section: the gateway id chosen
 * and `{gatewayId}` replaced in every key and topic template. Structurally the validated config
 * (config/redis.ts), so the composition root passes that in after `resolveRedisSettings`.
 */
export interface RedisSettings {
  readonly url: string;
  readonly username?: string | undefined;
  readonly password?: string | undefined;
  readonly tls?: { readonly ca?: string | undefined; readonly rejectUnauthorized: boolean } | undefined;
  readonly sentinels?: readonly { readonly host: string; readonly port: number }[] | undefined;
  readonly name?: string | undefined;
  readonly gatewayId: string;
  readonly connectTimeout: number;
  readonly commandTimeout: number;
  readonly reconnect: { readonly initialDelay: number; readonly maxDelay: number };
  readonly statusTopic: string;
  readonly uplink: {
    readonly topics: readonly string[];
    readonly stream: string;
    readonly maxLen: number;
    readonly batchSize: number;
    readonly replayRate: number;
  };
  readonly downlink: { readonly enabled: boolean; readonly stream: string };
  readonly cluster: { readonly enabled: boolean; readonly channel: string };
}

type Unresolved = Omit<RedisSettings, 'gatewayId'> & { readonly gatewayId?: string | undefined };

/** Fills in the gateway id (default: `fallbackId`, the host name) and expands `{gatewayId}`. */
export function resolveRedisSettings(config: Unresolved, fallbackId: string): RedisSettings {
  const gatewayId = config.gatewayId ?? safeId(fallbackId);
  const expand = (template: string): string => template.replaceAll('{gatewayId}', gatewayId);
  return {
    ...config,
    gatewayId,
    statusTopic: expand(config.statusTopic),
    uplink: { ...config.uplink, stream: expand(config.uplink.stream) },
    downlink: { ...config.downlink, stream: expand(config.downlink.stream) },
    cluster: { ...config.cluster, channel: expand(config.cluster.channel) },
  };
}

/** A host name as a gateway id: characters outside the safe set replaced, length capped. */
function safeId(host: string): string {
  const cleaned = host.replace(/[^A-Za-z0-9_.-]/g, '-').replace(/^[^A-Za-z0-9]+/, '').slice(0, 64);
  return cleaned === '' ? 'edgeway' : cleaned;
}
