/**
 * A small hand-written SVG of a soak run: one panel per series (RSS, descriptors, event-loop lag,
 * outbox), stacked, sharing the time axis; each a polyline with its range written beside it and a
 * dashed line where the judged ("settled") part of the run begins. No chart dependency.
 */

export interface ChartSeries {
  readonly title: string;
  readonly unit: string;
  /** One value per time; NaN leaves a gap. */
  readonly values: readonly number[];
}

const WIDTH = 760;
const PANEL_HEIGHT = 130;
const LEFT = 70;
const RIGHT = 20;
const TOP = 36;
const GAP = 40;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];

const escape = (s: string): string => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

function fmt(v: number): string {
  if (!Number.isFinite(v)) return '—';
  if (Math.abs(v) >= 100) return v.toFixed(0);
  if (Math.abs(v) >= 10) return v.toFixed(1);
  return v.toFixed(2);
}

/** `times` in seconds since the start; `settledFrom` (s) draws the judged part's start. */
export function renderChart(title: string, times: readonly number[], series: readonly ChartSeries[], settledFrom?: number): string {
  const plotWidth = WIDTH - LEFT - RIGHT;
  const tEnd = Math.max(1, ...times);
  const x = (t: number): number => LEFT + (t / tEnd) * plotWidth;
  const height = TOP + series.length * (PANEL_HEIGHT + GAP) + 10;
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${height}" viewBox="0 0 ${WIDTH} ${height}" font-family="sans-serif" font-size="11">`,
    `<rect width="${WIDTH}" height="${height}" fill="white"/>`,
    `<text x="${LEFT}" y="20" font-size="14" font-weight="bold">${escape(title)}</text>`,
  ];
  series.forEach((s, i) => {
    const top = TOP + i * (PANEL_HEIGHT + GAP);
    const finite = s.values.filter(Number.isFinite);
    const lo = Math.min(0, ...finite);
    const hi = Math.max(lo + 1e-9, ...finite) * 1.05;
    const y = (v: number): number => top + PANEL_HEIGHT - ((v - lo) / (hi - lo)) * PANEL_HEIGHT;
    out.push(`<rect x="${LEFT}" y="${top}" width="${plotWidth}" height="${PANEL_HEIGHT}" fill="none" stroke="#999"/>`);
    out.push(`<text x="${LEFT}" y="${top - 6}" font-weight="bold">${escape(`${s.title} (${s.unit})`)}</text>`);
    out.push(`<text x="${LEFT - 6}" y="${top + 10}" text-anchor="end">${fmt(hi)}</text>`);
    out.push(`<text x="${LEFT - 6}" y="${top + PANEL_HEIGHT}" text-anchor="end">${fmt(lo)}</text>`);
    out.push(`<text x="${LEFT + plotWidth}" y="${top - 6}" text-anchor="end">min ${fmt(Math.min(...finite))}, max ${fmt(Math.max(...finite))}, last ${fmt(finite.at(-1) ?? Number.NaN)}</text>`);
    if (settledFrom !== undefined) {
      out.push(`<line x1="${x(settledFrom).toFixed(1)}" y1="${top}" x2="${x(settledFrom).toFixed(1)}" y2="${top + PANEL_HEIGHT}" stroke="#aaa" stroke-dasharray="4 3"/>`);
    }
    // A NaN (a failed sample) breaks the line rather than drawing a false value.
    let run: string[] = [];
    const flush = (): void => {
      if (run.length > 0) out.push(`<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${run.join(' ')}"/>`);
      run = [];
    };
    s.values.forEach((v, k) => {
      if (Number.isFinite(v)) run.push(`${x(times[k] ?? 0).toFixed(1)},${y(v).toFixed(1)}`);
      else flush();
    });
    flush();
    out.push(`<text x="${LEFT}" y="${top + PANEL_HEIGHT + 14}">0</text>`);
    out.push(`<text x="${LEFT + plotWidth}" y="${top + PANEL_HEIGHT + 14}" text-anchor="end">${fmt(tEnd / 60)} min</text>`);
  });
  out.push('</svg>');
  return `${out.join('\n')}\n`;
}
