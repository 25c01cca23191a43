/**
 * Types shared between the harness (run.ts) and the load-generator child
 * process (loadgen.ts). The harness passes a LoadgenConfig as a JSON argv
 * string; the load generator answers with one LoadgenResult JSON line on stdout.
 */

export const SCENARIOS = [
  'fanin-qos0',
  'fanout-qos0',
  'fanin-qos1',
  'latency',
  'idle-rss',
  'overload',
  // Scenarios 1 and 2 with every client speaking MQTT 5 (brokers without it are skipped).
  'fanin-qos0-v5',
  'fanout-qos0-v5',
] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

/**
 * `edgeway-durable` is edgeway with an outbox for `sensors/#` (scripts/gateway-child.ts): every
 * fan-in message is stored, every QoS 1 PUBACK waits for its commit. It measures the cost of durable
 * acknowledgement against plain `edgeway`, so it runs only when asked for (not in DEFAULT_BROKERS).
 */
export const BROKERS = ['edgeway', 'edgeway-durable', 'mosquitto', 'aedes'] as const;
export type BrokerName = (typeof BROKERS)[number];
export const DEFAULT_BROKERS: readonly BrokerName[] = ['edgeway', 'mosquitto', 'aedes'];

/** Everything a load-generator run needs. One flat shape keeps the JSON hand-off trivial. */
export interface LoadgenConfig {
  scenario: ScenarioName;
  host: string;
  port: number;
  /** PID of the broker, so CPU and RSS can be sampled from /proc at the exact window edges. */
  brokerPid: number;
  /** sysconf(_SC_CLK_TCK), used to convert /proc tick counts to seconds. */
  clkTck: number;
  warmupMs: number;
  durationMs: number;
  payloadBytes: number;
  /** Publishers for the fan-in scenarios (1, 3, 6). */
  publishers: number;
  /** Subscribers for the fan-out scenario (2). */
  subscribers: number;
  /** Messages written per socket write in the throughput scenarios. */
  burst: number;
  /** Max messages sent-but-not-yet-delivered in the QoS 0 fan-in scenario. */
  qos0Window: number;
  /** Max messages sent-but-not-yet-delivered to the slowest subscriber in the fan-out scenario. */
  fanoutWindow: number;
  /** Unacked PUBLISHes allowed per publisher in the QoS 1 scenario. */
  qos1Window: number;
  /** Global cap on published-but-not-delivered QoS 1 messages (see faninQos1). */
  qos1E2eWindow: number;
  /** Publish rate of the latency scenario, msg/s. */
  latencyRate: number;
  /** Number of idle clients in the RSS scenario. */
  idleConns: number;
  /** Subscriber read limit in msg/s in the overload scenario; 0 = read as fast as possible. */
  overloadSubRate: number;
  /** MQTT protocol level every client of the scenario connects with: 4 (3.1.1) or 5. */
  protocolVersion: 4 | 5;
}

export interface CpuUsage {
  /** Broker CPU during the measurement window, % of one core. */
  brokerPct: number;
  /** Load-generator CPU during the measurement window, % of one core. */
  loadgenPct: number;
  /**
   * Everything else that kept the machine's CPUs busy (other processes, kernel
   * softirq, VM steal), % of one core. High values mean the run was disturbed.
   */
  otherPct: number;
}

export interface LoadgenResult {
  scenario: ScenarioName;
  /** Length of the measurement window actually observed, seconds. */
  windowSec: number;
  cpu?: CpuUsage;
  /** Broker process still alive when the measurement ended (before our sockets closed). */
  brokerAlive: boolean;
  /** Named numeric results; the keys per scenario are listed in scenarios.ts. */
  metrics: Record<string, number>;
  /** Time series for the JSON output (e.g. broker RSS every 200 ms). */
  series?: Record<string, number[]>;
  /** Human-readable remarks (drops, stalls, partial connects...). */
  notes: string[];
}
