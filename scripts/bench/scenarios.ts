/**
 * Scenario catalogue on the harness side: what each scenario is called in the
 * report, which result metrics become table rows, and the LoadgenConfig it
 * needs. The traffic itself lives in workloads.ts (load-generator process).
 */
import type { BenchOptions } from './cli';
import type { LoadgenConfig, ScenarioName } from './types';

export interface MetricSpec {
  /** Key in LoadgenResult.metrics. */
  key: string;
  label: string;
  /** Direction for reading the edgeway/x ratio; 'none' suppresses the ratio. */
  better: 'higher' | 'lower' | 'none';
  kind?: 'number' | 'bool' | 'percent';
}

export interface ScenarioSpec {
  name: ScenarioName;
  title: string;
  metrics: MetricSpec[];
  /** Whether CPU% over the window is meaningful (not for the idle-RSS scenario). */
  cpu: boolean;
  /** Throughput scenario that should saturate one side; if neither is busy, flow control limited it. */
  saturating: boolean;
  /** Every client speaks MQTT 5; brokers without MQTT 5 (aedes) are skipped. */
  mqtt5?: boolean;
}

export const SCENARIO_SPECS: Record<ScenarioName, ScenarioSpec> = {
  'fanin-qos0': {
    name: 'fanin-qos0',
    title: '1. QoS0 fan-in 100→1',
    cpu: true,
    saturating: true,
    metrics: [
      { key: 'deliveredPerSec', label: 'delivered msg/s', better: 'higher' },
      { key: 'diskBytesPerMsg', label: 'broker disk bytes/msg', better: 'lower' },
    ],
  },
  'fanout-qos0': {
    name: 'fanout-qos0',
    title: '2. QoS0 fan-out 1→100',
    cpu: true,
    saturating: true,
    metrics: [
      { key: 'deliveriesPerSec', label: 'deliveries msg/s', better: 'higher' },
      { key: 'publishesPerSec', label: 'publishes msg/s', better: 'higher' },
    ],
  },
  'fanin-qos1': {
    name: 'fanin-qos1',
    title: '3. QoS1 fan-in 100→1',
    cpu: true,
    saturating: true,
    metrics: [
      { key: 'deliveredPerSec', label: 'delivered msg/s', better: 'higher' },
      { key: 'pubackedPerSec', label: 'PUBACKed msg/s', better: 'higher' },
      { key: 'diskBytesPerMsg', label: 'broker disk bytes/msg', better: 'lower' },
    ],
  },
  latency: {
    name: 'latency',
    title: '4. Latency @ fixed rate',
    cpu: true,
    saturating: false,
    metrics: [
      { key: 'p50Ms', label: 'p50 ms', better: 'lower' },
      { key: 'p99Ms', label: 'p99 ms', better: 'lower' },
      { key: 'maxMs', label: 'max ms', better: 'lower' },
    ],
  },
  'idle-rss': {
    name: 'idle-rss',
    title: '5. Idle connections',
    cpu: false,
    saturating: false,
    metrics: [
      { key: 'rssBeforeMB', label: 'broker RSS before, MB', better: 'lower' },
      { key: 'kbPerConn', label: 'RSS per idle conn, KB', better: 'lower' },
      { key: 'connectPerSec', label: 'CONNECT+CONNACK /s', better: 'higher' },
    ],
  },
  overload: {
    name: 'overload',
    title: '6. Fan-in overload 100→1',
    cpu: true,
    saturating: true,
    metrics: [
      { key: 'deliveredPerSec', label: 'delivered msg/s', better: 'higher' },
      { key: 'vsFaninQos0', label: 'delivered vs scenario 1', better: 'higher', kind: 'percent' },
      { key: 'rssPeakMB', label: 'broker RSS peak, MB', better: 'lower' },
      { key: 'rssGrowthMB', label: 'broker RSS growth, MB', better: 'lower' },
      { key: 'rssTrendMBps', label: 'RSS trend, 2nd half, MB/s', better: 'lower' },
      { key: 'rssBounded', label: 'RSS bounded', better: 'none', kind: 'bool' },
    ],
  },
  'fanin-qos0-v5': {
    name: 'fanin-qos0-v5',
    title: '7. MQTT 5 QoS0 fan-in 100→1',
    cpu: true,
    saturating: true,
    mqtt5: true,
    metrics: [{ key: 'deliveredPerSec', label: 'delivered msg/s', better: 'higher' }],
  },
  'fanout-qos0-v5': {
    name: 'fanout-qos0-v5',
    title: '8. MQTT 5 QoS0 fan-out 1→100',
    cpu: true,
    saturating: true,
    mqtt5: true,
    metrics: [
      { key: 'deliveriesPerSec', label: 'deliveries msg/s', better: 'higher' },
      { key: 'publishesPerSec', label: 'publishes msg/s', better: 'higher' },
    ],
  },
};

export function loadgenConfig(
  o: BenchOptions,
  scenario: ScenarioName,
  target: { port: number; pid: number; host: string },
  clkTck: number,
): LoadgenConfig {
  return {
    scenario,
    host: target.host,
    port: target.port,
    brokerPid: target.pid,
    clkTck,
    warmupMs: o.warmupSec * 1000,
    durationMs: o.durationSec * 1000,
    payloadBytes: o.payload,
    publishers: o.publishers,
    subscribers: o.subscribers,
    burst: o.burst,
    qos0Window: o.window,
    fanoutWindow: o.fanoutWindow,
    qos1Window: o.qos1Window,
    qos1E2eWindow: o.qos1E2eWindow,
    latencyRate: o.latencyRate,
    idleConns: o.idleConns,
    overloadSubRate: o.overloadSubRate,
    protocolVersion: SCENARIO_SPECS[scenario].mqtt5 === true ? 5 : 4,
  };
}

/** Rough wall-clock budget of one scenario on one broker, for the up-front estimate. */
export function estimateSec(o: BenchOptions, scenario: ScenarioName): number {
  const startStop = 1.5;
  if (scenario === 'idle-rss') return startStop + 3 + o.idleConns / 2000;
  if (scenario === 'latency') return startStop + o.warmupSec + o.durationSec + 0.7;
  return startStop + o.warmupSec + o.durationSec + 0.5;
}
