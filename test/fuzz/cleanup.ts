/**
 * Ends what the fuzz clients asked the gateway to keep, through the protocol, before the RSS is
 * compared with the baseline: their persistent sessions (with up to limits.maxQueued messages
 * queued each) and their retained messages are data, not leaks. Once they are gone, memory the
 * gateway still holds is what the RSS check is about.
 */
import mqtt from 'mqtt';
import { CLIENT_POOL, FUZZ_CLIENT_PREFIX } from './packets';

/** Connects with a clean session under every pooled fuzz identifier: the gateway discards each session. */
export async function endFuzzSessions(port: number): Promise<void> {
  for (let i = 0; i < CLIENT_POOL; i++) {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      protocolVersion: 5,
      clientId: `${FUZZ_CLIENT_PREFIX}${i}`,
      clean: true, // Clean Start, Session Expiry 0: the session ends with this connection
      reconnectPeriod: 0,
      connectTimeout: 10_000,
    });
    await client.endAsync();
  }
}

/**
 * Deletes every retained message a fuzz client left: subscribes to everything (`#` does not match
 * `$`-topics, so `$fz/#` too), and publishes an empty retained message to each retained topic
 * received. In rounds, until one finds none: the retained messages sent on subscribing are QoS 0
 * to this subscriber, and some are dropped at limits.maxOutgoingBytes like any other (QoS 1 would
 * be bound by limits.maxQueued instead). Returns how many were deleted.
 */
export async function clearRetained(port: number, timeoutMs: number): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let cleared = 0;
  for (let round = 0; round < 20 && Date.now() < deadline; round++) {
    const found = await clearRetainedRound(port, deadline);
    if (found.total === 0 || found.cleared === 0) break;
    cleared += found.cleared;
  }
  return cleared;
}

async function clearRetainedRound(port: number, deadline: number): Promise<{ total: number; cleared: number }> {
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, clean: true, reconnectPeriod: 0, connectTimeout: 10_000 });
  try {
    const topics = new Set<string>();
    let lastAt = Date.now();
    client.on('message', (topic, payload, packet) => {
      if (packet.retain && payload.length > 0) topics.add(topic);
      lastAt = Date.now();
    });
    await client.subscribeAsync(['#', '$fz/#'], { qos: 0 });
    // Retained messages come right after SUBACK; a quiet second means all of them arrived.
    while (Date.now() - lastAt < 1000 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    await client.unsubscribeAsync(['#', '$fz/#']);
    // All at once: one by one, each would wait for its PUBACK, which waits for a storage commit.
    // A topic mqtt.js refuses to publish to stays: the RSS bound has room for a few.
    const results = await Promise.all([...topics].map((topic) => client.publishAsync(topic, '', { qos: 1, retain: true }).then(() => true, () => false)));
    return { total: topics.size, cleared: results.filter(Boolean).length };
  } finally {
    await client.endAsync(true);
  }
}
