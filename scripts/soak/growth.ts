/**
 * The soak run's verdict on resources (issue 9 part 3): does resident memory or the number of open
 * descriptors keep growing? Pure, so test/unit/soak-growth.test.ts can show it both ways.
 *
 * The first quarter of the run is warm-up and not judged: V8 sizes its heap, SQLite fills its page
 * cache, the checkpoint thread may start, malloc arenas grow — memory rises there on any healthy
 * run. On the rest ("settled"):
 *
 * - **RSS** grows without bound when BOTH the least-squares slope over the second half of the run
 *   exceeds `rssSlopeMbPerHour`, AND the median of the last 10 % of samples exceeds the median of
 *   the first 10 % of the settled samples by more than `rssRiseMb`. Either alone is too jumpy:
 *   garbage collection makes RSS a saw-tooth of several MB, which tilts a fit over a few minutes;
 *   a leak shows as both a trend and a net rise. Defaults: 16 MB/h — about the smallest steady
 *   growth a 30-minute run can tell from that saw-tooth (4 MB over the 15 minutes fitted) — and
 *   8 MB.
 * - **Descriptors** grow without bound when the largest count in the last 10 % exceeds the largest
 *   in the first 10 % of the settled samples by more than `fdRise` (default 16). The soak's
 *   connections stay open the whole time, so the count should be flat; the allowance covers
 *   SQLite's WAL and shared-memory files and a reconnecting Redis client.
 */
import { median, slope } from '../bench/stats';

export interface GrowthLimits {
  readonly rssSlopeMbPerHour: number;
  readonly rssRiseMb: number;
  readonly fdRise: number;
}

export const DEFAULT_GROWTH_LIMITS: GrowthLimits = { rssSlopeMbPerHour: 16, rssRiseMb: 8, fdRise: 16 };

export interface ResourceSample {
  /** Seconds since the start of the run. */
  readonly t: number;
  readonly rssMb: number;
  readonly fds: number;
}

export interface GrowthVerdict {
  readonly settledFrom: number;
  readonly rssSlopeMbPerHour: number;
  readonly rssStartMb: number;
  readonly rssEndMb: number;
  readonly fdStart: number;
  readonly fdEnd: number;
  readonly rssGrows: boolean;
  readonly fdsGrow: boolean;
  /** One line per finding, with the numbers and the limits. */
  readonly findings: readonly string[];
}

/** A tenth of `xs`, at least one element. */
function tenth<T>(xs: readonly T[], from: 'start' | 'end'): T[] {
  const n = Math.max(1, Math.ceil(xs.length / 10));
  return from === 'start' ? xs.slice(0, n) : xs.slice(-n);
}

export function judgeGrowth(samples: readonly ResourceSample[], limits: GrowthLimits = DEFAULT_GROWTH_LIMITS): GrowthVerdict {
  const valid = samples.filter((s) => Number.isFinite(s.rssMb) && Number.isFinite(s.fds));
  if (valid.length < 4) throw new Error(`too few samples to judge growth (${valid.length}); run longer or sample more often`);
  const end = (valid.at(-1) as ResourceSample).t;
  const settledFrom = end / 4;
  const settled = valid.filter((s) => s.t >= settledFrom);
  const secondHalf = valid.filter((s) => s.t >= end / 2);
  const rssSlopeMbPerHour = slope(secondHalf.map((s) => s.t / 3600), secondHalf.map((s) => s.rssMb));
  const rssStartMb = median(tenth(settled, 'start').map((s) => s.rssMb));
  const rssEndMb = median(tenth(settled, 'end').map((s) => s.rssMb));
  const fdStart = Math.max(...tenth(settled, 'start').map((s) => s.fds));
  const fdEnd = Math.max(...tenth(settled, 'end').map((s) => s.fds));
  const rssGrows = rssSlopeMbPerHour > limits.rssSlopeMbPerHour && rssEndMb - rssStartMb > limits.rssRiseMb;
  const fdsGrow = fdEnd - fdStart > limits.fdRise;
  const findings: string[] = [];
  if (rssGrows) {
    findings.push(
      `RSS grows: ${rssSlopeMbPerHour.toFixed(1)} MB/h over the second half (limit ${limits.rssSlopeMbPerHour}) and ${rssStartMb.toFixed(1)} → ${rssEndMb.toFixed(1)} MB settled start to end (limit +${limits.rssRiseMb} MB)`,
    );
  }
  if (fdsGrow) findings.push(`descriptors grow: ${fdStart} → ${fdEnd} settled start to end (limit +${limits.fdRise})`);
  return { settledFrom, rssSlopeMbPerHour, rssStartMb, rssEndMb, fdStart, fdEnd, rssGrows, fdsGrow, findings };
}
