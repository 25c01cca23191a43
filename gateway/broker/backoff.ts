/**
 * Capped exponential back-off with jitter, for anything that retries (reopening a serial port,
 * reconnecting to Redis): initialDelay doubled per attempt (`attempt` 0 = the first retry) up to
 * maxDelay, then spread by ±`jitter` (a fraction of it) so that many ports or gateways do not
 * retry in step. Never below 1 ms: a zero delay would spin.
 */
export function backoffDelay(attempt: number, initialDelay: number, maxDelay: number, jitter: number, random: () => number = Math.random): number {
  // 2 ** 30 already exceeds any sensible cap; bounding the exponent keeps the number finite.
  const base = Math.min(maxDelay, initialDelay * 2 ** Math.min(attempt, 30));
  return Math.max(1, Math.round(base * (1 - jitter + 2 * jitter * random())));
}
