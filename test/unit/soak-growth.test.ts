/**
 * The soak's verdict on resources (scripts/soak/growth.ts) and its chart (scripts/soak/chart.ts):
 * flat or saw-tooth memory with a warm-up passes; a steady leak, or descriptors that keep
 * opening, fail with the numbers.
 */
import t from 'tap';
import { renderChart } from '../../scripts/soak/chart';
import { judgeGrowth, type ResourceSample } from '../../scripts/soak/growth';

/** 30 minutes sampled every 5 s; `rss(t)` in MB, `fds(t)`, t in seconds. */
function run(rss: (t: number) => number, fds: (t: number) => number = () => 1030): ResourceSample[] {
  return Array.from({ length: 360 }, (_, i) => {
    const t = (i + 1) * 5;
    return { t, rssMb: rss(t), fds: fds(t) };
  });
}

/** Warm-up from 60 to 100 MB over the first 5 minutes, then a ±6 MB garbage-collection saw-tooth. */
const healthy = (t: number): number => (t < 300 ? 60 + (40 * t) / 300 : 100) + 6 * (((t / 5) % 12) / 6 - 1);

t.test('warm-up and a garbage-collection saw-tooth pass', async (t) => {
  const v = judgeGrowth(run(healthy));
  t.same(v.findings, []);
  t.notOk(v.rssGrows);
  t.notOk(v.fdsGrow);
  t.equal(v.settledFrom, 450, 'the first quarter is not judged');
});

t.test('a steady leak fails, with its slope and rise', async (t) => {
  // 40 MB/h on top of the healthy curve: 20 MB over the run.
  const v = judgeGrowth(run((s) => healthy(s) + (40 * s) / 3600));
  t.ok(v.rssGrows);
  t.ok(v.rssSlopeMbPerHour > 30 && v.rssSlopeMbPerHour < 50, `slope ${v.rssSlopeMbPerHour}`);
  t.match(v.findings.join('\n'), /^RSS grows: \d+\.\d MB\/h over the second half \(limit 16\) and [\d.]+ → [\d.]+ MB settled start to end \(limit \+8 MB\)$/);
});

t.test('a tilt alone, or a rise alone, is not growth', async (t) => {
  // Rising at 30 MB/h through the second half only: under 8 MB in all.
  const tiltOnly = judgeGrowth(run((s) => 100 + (s > 900 ? ((s - 900) * 30) / 3600 : 0)));
  t.ok(tiltOnly.rssSlopeMbPerHour > 16, `slope ${tiltOnly.rssSlopeMbPerHour.toFixed(1)} MB/h`);
  t.notOk(tiltOnly.rssGrows, `rise ${(tiltOnly.rssEndMb - tiltOnly.rssStartMb).toFixed(1)} MB`);
  // One step of 12 MB early in the settled part (a cache filling), flat or falling afterwards.
  const riseOnly = judgeGrowth(run((s) => (s < 600 ? 100 : 112) - (s > 600 ? ((s - 600) * 2) / 3600 : 0)));
  t.ok(riseOnly.rssEndMb - riseOnly.rssStartMb > 8, `rise ${(riseOnly.rssEndMb - riseOnly.rssStartMb).toFixed(1)} MB`);
  t.notOk(riseOnly.rssGrows, `slope ${riseOnly.rssSlopeMbPerHour.toFixed(1)} MB/h`);
});

t.test('descriptors that keep opening fail; a small wiggle passes', async (t) => {
  const leak = judgeGrowth(run(healthy, (s) => 1030 + Math.floor(s / 60)));
  t.ok(leak.fdsGrow);
  t.match(leak.findings.join('\n'), /descriptors grow: \d+ → \d+ settled start to end \(limit \+16\)/);
  const wiggle = judgeGrowth(run(healthy, (s) => 1030 + (Math.floor(s / 5) % 3)));
  t.notOk(wiggle.fdsGrow);
});

t.test('too few samples is an error, not a pass', async (t) => {
  t.throws(() => judgeGrowth(run(healthy).slice(0, 3)), /too few samples/);
});

t.test('the chart has one panel and polyline per series, and a gap for a failed sample', async (t) => {
  const svg = renderChart('soak <test>', [5, 10, 15, 20], [
    { title: 'RSS', unit: 'MB', values: [100, 101, Number.NaN, 102] },
    { title: 'fds', unit: 'count', values: [1030, 1030, 1031, 1030] },
  ], 10);
  t.match(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/);
  t.match(svg, /soak &lt;test&gt;/, 'text is escaped');
  t.equal(svg.match(/<polyline /g)?.length, 3, 'RSS broken in two by the NaN, fds in one');
  t.equal(svg.match(/stroke-dasharray/g)?.length, 2, 'the settled line in each panel');
  t.match(svg, /min 100, max 102, last 102/);
  t.match(svg, /<\/svg>\n$/);
});
