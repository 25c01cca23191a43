/**
 * Capped exponential back-off with jitter for reopening a port. `attempt` 0 is the first retry.
 * The delay doubles from initialDelay up to maxDelay, then a ±20 % jitter is applied (and capped
 * again), so several ports behind one USB hub do not retry in lockstep after a hub reset.
 */
export function backoffDelay(attempt: number, initialDelay: number, maxDelay: number, random: () => number = Math.random): number {
  // 2 ** 30 already exceeds any sensible cap; bounding the exponent keeps the number finite.
  const base = Math.min(maxDelay, initialDelay * 2 ** Math.min(attempt, 30));
  const jittered = base * (0.8 + 0.4 * random());
  return Math.max(1, Math.min(maxDelay, Math.round(jittered)));
}
