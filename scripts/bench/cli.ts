/** Command-line options for run.ts. Plain argv parsing: no dependency needed for a dozen flags. */
import { BROKERS, DEFAULT_BROKERS, SCENARIOS, type BrokerName, type ScenarioName } from './types';

export interface BenchOptions {
  brokers: BrokerName[];
  scenarios: ScenarioName[];
  durationSec: number;
  warmupSec: number;
  json: string | null;
  publishers: number;
  subscribers: number;
  payload: number;
  burst: number;
  window: number;
  fanoutWindow: number;
  qos1Window: number;
  qos1E2eWindow: number;
  latencyRate: number;
  idleConns: number;
  overloadSubRate: number;
  pin: boolean;
  edgewayEntry: string | null;
  mosquittoBin: string;
  mosquittoNodelay: boolean;
  readyTimeoutSec: number;
}

export const USAGE = `Usage: npm run bench -- [options]     (or: node dist/scripts/bench/run.js [options])
       node <outDir>/scripts/bench/run.js [options]   benchmarks the build in <outDir> (tsc --outDir)

  --brokers LIST          comma list of ${BROKERS.join(',')}
                          (edgeway-durable: edgeway storing sensors/# in its outbox, PUBACK
                          after the commit; only when listed)     [${DEFAULT_BROKERS.join(',')}]
  --scenarios LIST        comma list of names or numbers 1-6:
                            1 fanin-qos0   100 pubs -> 1 sub, QoS 0, windowed
                            2 fanout-qos0  1 pub -> 100 subs, QoS 0, windowed
                            3 fanin-qos1   100 pubs -> 1 sub, QoS 1, 10 unacked/pub
                            4 latency      fixed-rate pub -> 1 sub, p50/p99/max
                            5 idle-rss     broker RSS per idle connection
                            6 overload     fan-in, unbounded publishers
                            7 fanin-qos0-v5   scenario 1 with MQTT 5 clients
                            8 fanout-qos0-v5  scenario 2 with MQTT 5 clients
                                           (skipped for aedes: no MQTT 5)   [all]
  --duration SEC          measurement window per scenario                   [5]
  --warmup SEC            traffic before the window starts                  [2]
  --json FILE             also write all results as JSON
  --publishers N          publishers in fan-in scenarios                    [100]
  --subscribers N         subscribers in fan-out scenario                   [100]
  --payload BYTES         payload size                                      [64]
  --burst N               messages per socket write                         [20]
  --window N              QoS 0 fan-in: max messages sent-not-delivered     [2000]
  --fanout-window N       fan-out: max publishes ahead of slowest sub       [500]
  --qos1-window N         QoS 1: unacked PUBLISHes per publisher            [10]
  --qos1-e2e-window N     QoS 1: max published-not-delivered overall     [500]
  --latency-rate N        latency scenario publish rate, msg/s              [5000]
  --idle-conns N          idle-rss connections                              [1000]
  --overload-sub-rate N   overload: subscriber reads at most N msg/s (0=max) [0]
  --no-pin                do not pin with taskset
  --edgeway-entry FILE    edgeway main script          [gateway/main.js of the build running this]
                          (edgeway-durable: scripts/gateway-child.js of the same build)
  --mosquitto PATH        mosquitto binary             [/usr/sbin/mosquitto]
  --mosquitto-nodelay     add 'set_tcp_nodelay true' to mosquitto's config (stock: Nagle on)
  --ready-timeout SEC     broker start-up deadline                          [15]
  --help
`;

const VALUE_FLAGS = new Set([
  'brokers', 'scenarios', 'duration', 'warmup', 'json', 'publishers', 'subscribers', 'payload', 'burst',
  'window', 'fanout-window', 'qos1-window', 'qos1-e2e-window', 'latency-rate', 'idle-conns',
  'overload-sub-rate', 'edgeway-entry', 'mosquitto', 'ready-timeout',
]);

const SCENARIO_NUMBERS: Record<string, ScenarioName> = Object.fromEntries(
  SCENARIOS.map((s, i) => [String(i + 1), s]),
);

function list<T extends string>(raw: string, allowed: readonly T[], aliases: Record<string, T> = {}): T[] {
  const out: T[] = [];
  for (const part of raw.split(',').map((s) => s.trim()).filter(Boolean)) {
    const v = aliases[part] ?? (allowed as readonly string[]).find((a) => a === part);
    if (v === undefined) throw new Error(`unknown value "${part}" (allowed: ${allowed.join(', ')})`);
    if (!out.includes(v as T)) out.push(v as T);
  }
  if (out.length === 0) throw new Error('empty list');
  return out;
}

function num(name: string, raw: string, min: number): number {
  const v = Number(raw);
  if (!Number.isFinite(v) || v < min) throw new Error(`--${name} must be a number >= ${min}, got "${raw}"`);
  return v;
}

export function parseArgs(argv: string[]): BenchOptions | 'help' {
  const o: BenchOptions = {
    brokers: [...DEFAULT_BROKERS],
    scenarios: [...SCENARIOS],
    durationSec: 5,
    warmupSec: 2,
    json: null,
    publishers: 100,
    subscribers: 100,
    payload: 64,
    burst: 20,
    window: 2000,
    fanoutWindow: 500,
    qos1Window: 10,
    qos1E2eWindow: 0, // 0 = derived below
    latencyRate: 5000,
    idleConns: 1000,
    overloadSubRate: 0,
    pin: true,
    edgewayEntry: null,
    mosquittoBin: '/usr/sbin/mosquitto',
    mosquittoNodelay: false,
    readyTimeoutSec: 15,
  };
  for (let i = 0; i < argv.length; i++) {
    let flag = argv[i]!;
    let value: string | undefined;
    const eq = flag.indexOf('=');
    if (eq > 0) {
      value = flag.slice(eq + 1);
      flag = flag.slice(0, eq);
    }
    const name = flag.replace(/^--/, '');
    if (name === 'help' || name === 'h') return 'help';
    if (name === 'no-pin') {
      o.pin = false;
      continue;
    }
    if (name === 'mosquitto-nodelay') {
      o.mosquittoNodelay = true;
      continue;
    }
    if (!VALUE_FLAGS.has(name)) throw new Error(`unknown option ${flag}\n\n${USAGE}`);
    if (value === undefined) {
      value = argv[++i];
      if (value === undefined) throw new Error(`${flag} needs a value`);
    }
    switch (name) {
      case 'brokers': o.brokers = list(value, BROKERS); break;
      case 'scenarios': o.scenarios = list(value, SCENARIOS, SCENARIO_NUMBERS); break;
      case 'duration': o.durationSec = num(name, value, 0.5); break;
      case 'warmup': o.warmupSec = num(name, value, 0); break;
      case 'json': o.json = value; break;
      case 'publishers': o.publishers = num(name, value, 1); break;
      case 'subscribers': o.subscribers = num(name, value, 1); break;
      case 'payload': o.payload = num(name, value, 8); break;
      case 'burst': o.burst = num(name, value, 1); break;
      case 'window': o.window = num(name, value, 1); break;
      case 'fanout-window': o.fanoutWindow = num(name, value, 1); break;
      case 'qos1-window': o.qos1Window = num(name, value, 1); break;
      case 'qos1-e2e-window': o.qos1E2eWindow = num(name, value, 1); break;
      case 'latency-rate': o.latencyRate = num(name, value, 1); break;
      case 'idle-conns': o.idleConns = num(name, value, 1); break;
      case 'overload-sub-rate': o.overloadSubRate = num(name, value, 0); break;
      case 'edgeway-entry': o.edgewayEntry = value; break;
      case 'mosquitto': o.mosquittoBin = value; break;
      case 'ready-timeout': o.readyTimeoutSec = num(name, value, 1); break;
      default: throw new Error(`unknown option ${flag}\n\n${USAGE}`);
    }
  }
  if (o.publishers > 30000) throw new Error('--publishers must be <= 30000');
  if (o.qos1Window > 65535) throw new Error('--qos1-window must be <= 65535 (MQTT packet ids)');
  if (o.qos1E2eWindow === 0) o.qos1E2eWindow = 500;
  if (o.burst > o.window || o.burst > o.fanoutWindow) throw new Error('--burst must not exceed the windows');
  return o;
}
