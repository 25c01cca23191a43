/** Markdown rendering of the result matrix (brokers × scenarios). */
import { SCENARIO_SPECS, type MetricSpec } from './scenarios';
import { fmtNumber, fmtPct, fmtRatio } from './stats';
import type { BrokerName, LoadgenResult, ScenarioName } from './types';

/** `skipped`: the broker cannot run the scenario at all (aedes and MQTT 5); shown as n/a, not as an error. */
export type Outcome = { ok: true; result: LoadgenResult } | { ok: false; error: string; skipped?: boolean };
export type Results = Partial<Record<BrokerName, Partial<Record<ScenarioName, Outcome>>>>;

/** Load-generator CPU above this means the client side, not the broker, may have been the limit. */
const LOADGEN_SATURATED_PCT = 90;
/** Broker CPU below this in a throughput scenario means something other than broker CPU set the pace. */
const BUSY_PCT = 90;
/** CPU used by anything else on the machine above this means the run was disturbed (e.g. a concurrent build). */
const OTHER_PCT = 20;

function metricValue(o: Outcome | undefined, key: string): number | undefined {
  if (!o?.ok) return undefined;
  return o.result.metrics[key];
}

function fmtMetric(o: Outcome | undefined, m: MetricSpec): string {
  if (o === undefined) return '';
  if (!o.ok) return o.skipped === true ? 'n/a' : 'ERR';
  const v = o.result.metrics[m.key];
  if (v === undefined) return '–';
  if (m.kind === 'bool') return v ? 'yes' : 'NO';
  if (m.kind === 'percent') return fmtPct(v * 100);
  return fmtNumber(v);
}

function fmtCpu(o: Outcome | undefined): string {
  if (!o?.ok || !o.result.cpu) return '';
  const { brokerPct, loadgenPct, otherPct } = o.result.cpu;
  const flag = loadgenPct >= LOADGEN_SATURATED_PCT || otherPct >= OTHER_PCT ? ' ⚠' : '';
  return `${fmtPct(brokerPct)} / ${fmtPct(loadgenPct)} / ${fmtPct(otherPct)}${flag}`;
}

/**
 * Ratio columns as [numerator, denominator]: edgeway against each reference broker, and
 * edgeway-durable against plain edgeway (the cost of durable acknowledgement). Only for brokers
 * that ran.
 */
function ratioPairs(brokers: BrokerName[]): [BrokerName, BrokerName][] {
  if (!brokers.includes('edgeway')) return [];
  const pairs = brokers.filter((b) => b !== 'edgeway' && b !== 'edgeway-durable').map((r): [BrokerName, BrokerName] => ['edgeway', r]);
  if (brokers.includes('edgeway-durable')) pairs.push(['edgeway-durable', 'edgeway']);
  return pairs;
}

export function renderTable(brokers: BrokerName[], scenarios: ScenarioName[], results: Results): string {
  const pairs = ratioPairs(brokers);
  const header = [
    'Scenario',
    'Metric',
    ...brokers,
    ...pairs.map(([a, b]) => `${a}/${b}`),
    ...brokers.map((b) => `CPU ${b} (broker / load / other)`),
  ];
  const rows: string[][] = [];
  for (const s of scenarios) {
    const spec = SCENARIO_SPECS[s];
    spec.metrics.forEach((m, idx) => {
      const arrow = m.better === 'higher' ? ' ↑' : m.better === 'lower' ? ' ↓' : '';
      const cells = brokers.map((b) => fmtMetric(results[b]?.[s], m));
      const ratios = pairs.map(([a, b]) =>
        m.better === 'none' ? '' : fmtRatio(metricValue(results[a]?.[s], m.key), metricValue(results[b]?.[s], m.key)),
      );
      const cpu = brokers.map((b) => (idx === 0 && spec.cpu ? fmtCpu(results[b]?.[s]) : ''));
      rows.push([idx === 0 ? spec.title : '', `${m.label}${arrow}`, ...cells, ...ratios, ...cpu]);
    });
  }
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    `| ${cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join(' | ')} |`;
  const sep = `|${widths.map((w, i) => (i < 2 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`;
  return [line(header), sep, ...rows.map(line)].join('\n');
}

/** Per-run remarks: errors, drops, and which side saturated. */
export function renderNotes(brokers: BrokerName[], scenarios: ScenarioName[], results: Results): string {
  const out: string[] = [];
  for (const b of brokers) {
    for (const s of scenarios) {
      const o = results[b]?.[s];
      if (!o) continue;
      const where = `${b} / ${s}`;
      if (!o.ok) {
        const lines = o.error.split('\n');
        out.push(o.skipped === true ? `- ${where}: n/a, ${lines[0] ?? ''}` : `- **${where}: ERROR** ${lines[0] ?? ''}`);
        for (const l of lines.slice(1, 12)) out.push(`  > ${l}`);
        continue;
      }
      const cpu = o.result.cpu;
      if (cpu && cpu.otherPct >= OTHER_PCT) {
        out.push(
          `- ${where}: other activity used ${fmtPct(cpu.otherPct)} of a core during the window ` +
            '(other processes, kernel, VM steal) — the result is likely disturbed; re-run on a quiet machine',
        );
      }
      if (cpu && cpu.loadgenPct >= LOADGEN_SATURATED_PCT) {
        out.push(`- ${where}: load generator at ${fmtPct(cpu.loadgenPct)} of its core — the number is a lower bound for the broker`);
      } else if (cpu && SCENARIO_SPECS[s].saturating && cpu.brokerPct < BUSY_PCT && cpu.otherPct < OTHER_PCT) {
        out.push(
          `- ${where}: neither side CPU-bound (broker ${fmtPct(cpu.brokerPct)}, load ${fmtPct(cpu.loadgenPct)}) — ` +
            'limited by round trips / flow control (e.g. in-flight limits, TCP back-pressure), not CPU',
        );
      }
      for (const n of o.result.notes) out.push(`- ${where}: ${n}`);
    }
  }
  return out.join('\n');
}

export function legend(brokers: BrokerName[]): string {
  return [
    'CPU = % of one core over the measurement window: broker / load generator / everything else on the machine; ' +
      `⚠ = load generator ≥ ${LOADGEN_SATURATED_PCT}% or other ≥ ${OTHER_PCT}%.`,
    'Ratios are edgeway ÷ reference: for ↑ metrics > 1 means edgeway is better, for ↓ metrics < 1 means edgeway is better.',
    'Disk bytes/msg = the broker\'s /proc/<pid>/io write_bytes over the window ÷ messages (delivered; PUBACKed at QoS 1).',
    ...(brokers.includes('edgeway-durable')
      ? [
          'edgeway-durable = edgeway with every sensors/# message appended to its SQLite outbox (a QoS 1 PUBACK waits for ' +
            'the commit); edgeway-durable/edgeway is the cost of durable acknowledgement (issue 4 target for scenario 3: ≥ 0.70×).',
        ]
      : []),
  ].join('\n');
}
