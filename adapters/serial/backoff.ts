import { backoffDelay as jitteredBackoff } from '../../gateway/broker';

/**
 * Back-off for reopening a port (`attempt` 0 is the first retry): the shared one with ±20 %
 * jitter, capped again after the jitter, so several ports behind one USB hub do not retry in
 * lockstep after a hub reset and no wait exceeds maxDelay.
 */
export function backoffDelay(attempt: number, initialDelay: number, maxDelay: number, random: () => number = Math.random): number {
  return Math.min(maxDelay, jitteredBackoff(attempt, initialDelay, maxDelay, 0.2, random));
}
