/**
 * A serial-bridge fixture for integration tests: socat pty pairs, an in-process broker on a free
 * port, the SerialAdapter wired with `broker.context('serial')` (as gateway/main.ts does), the
 * device side of each pty, and a real MQTT client (mqtt.js over TCP) that records what it receives.
 * Everything is torn down in order, bounded, when the test ends.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connectAsync, type MqttClient } from 'mqtt';
import type { Test } from 'tap';
import { SerialAdapter, type SerialPortOptions } from '../../adapters/serial';
import { validateConfig } from '../../config/load';
import type { LogFields, Logger } from '../../gateway/broker';
import { startBroker, waitFor, type TestBroker } from './broker';
import { within } from './mqtt-client';
import { Device, PtyPair } from './pty';

export interface Received {
  readonly topic: string;
  readonly payload: string;
  readonly retain: boolean;
  readonly qos: number;
  /** Date.now() when the client received it. */
  readonly at: number;
}

/** Records every message an mqtt.js client receives. */
export class Collector {
  readonly messages: Received[] = [];

  constructor(readonly client: MqttClient) {
    client.on('message', (topic, payload, packet) => {
      this.messages.push({ topic, payload: payload.toString('utf8'), retain: packet.retain, qos: packet.qos, at: Date.now() });
    });
  }

  on(topic: string): Received[] {
    return this.messages.filter((m) => m.topic === topic);
  }

  /** Waits for the first message (from index `from`) that satisfies `predicate`. */
  async waitFor(predicate: (m: Received) => boolean, what: string, timeoutMs = 5000, from = 0): Promise<Received> {
    let found: Received | undefined;
    await waitFor(
      () => {
        for (let i = from; i < this.messages.length; i++) {
          const m = this.messages[i] as Received;
          if (predicate(m)) {
            found = m;
            return true;
          }
        }
        return false;
      },
      timeoutMs,
      what,
    );
    return found as Received;
  }

  waitForTopic(topic: string, timeoutMs = 5000, from = 0): Promise<Received> {
    return this.waitFor((m) => m.topic === topic, `a message on ${topic}`, timeoutMs, from);
  }

  /** Waits for a status message of port `name` with the given state (retained or live). */
  waitForStatus(name: string, state: 'online' | 'offline', timeoutMs = 5000, from = 0): Promise<Received> {
    const topic = `edgeway/serial/${name}/status`;
    return this.waitFor((m) => m.topic === topic && (JSON.parse(m.payload) as { state: string }).state === state, `${topic} ${state}`, timeoutMs, from);
  }
}

export interface LogLine {
  readonly level: string;
  readonly msg: string;
  readonly fields: LogFields | undefined;
}

/** A logger that keeps every line, so tests can assert on rate-limited and once-per-outage logs. */
export function memoryLogger(): { logger: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const at = (level: string) => (msg: string, fields?: LogFields) => {
    lines.push({ level, msg, fields });
  };
  return { logger: { debug: at('debug'), info: at('info'), warn: at('warn'), error: at('error') }, lines };
}

/** A port entry as in YAML; `path` is filled with the pty's gateway end. `missing`: no socat at start. */
export type PortSpec = Record<string, unknown> & { readonly name: string; readonly missing?: boolean };

export interface SerialFixture {
  readonly tb: TestBroker;
  readonly dir: string;
  readonly adapter: SerialAdapter;
  readonly sub: Collector;
  readonly log: LogLine[];
  readonly options: readonly SerialPortOptions[];
  pty(name: string): PtyPair;
  /** The device end of port `name` (opened at start, or by `plug`). */
  device(name: string): Device;
  /** Starts socat for `name` (again) and opens its device end. */
  plug(name: string): Promise<Device>;
  /** Closes the device end and stops socat: the device disappears. */
  unplug(name: string): Promise<void>;
}

/** Fast reconnects so hotplug tests take a second, not the production default. */
const TEST_PORT_DEFAULTS = { reconnect: { initialDelay: 50, maxDelay: 400 }, statusInterval: 0 };

export async function serialFixture(
  t: Test,
  ports: readonly PortSpec[],
  opts: { brokerConfig?: Record<string, unknown>; subscribe?: string[]; gatewayId?: string } = {},
): Promise<SerialFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-serial-'));
  const ptys = new Map<string, PtyPair>();
  const devices = new Map<string, Device>();
  const { logger, lines } = memoryLogger();
  let tb: TestBroker | undefined;
  let client: MqttClient | undefined;
  let adapter: SerialAdapter | undefined;

  // One teardown, in dependency order: the adapter (it publishes `offline`), the client, the
  // broker, the device ends, socat, the directory. Each step is bounded.
  t.teardown(async () => {
    await adapter?.stop(2000);
    if (client !== undefined) await within(client.endAsync(true), 'mqtt.js end').catch(() => undefined);
    await tb?.stop();
    for (const d of devices.values()) await d.close();
    for (const p of ptys.values()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  for (const spec of ports) {
    const pty = new PtyPair(dir, spec.name);
    ptys.set(spec.name, pty);
    if (spec.missing !== true) {
      await pty.start();
      devices.set(spec.name, await Device.open(pty.devicePath));
    }
  }
  const config = validateConfig(
    {
      serial: ports.map(({ missing: _missing, ...spec }) => ({ ...TEST_PORT_DEFAULTS, ...spec, path: (ptys.get(spec.name) as PtyPair).gatewayPath })),
    },
    'test',
  );
  tb = await startBroker(opts.brokerConfig ?? {}, logger);
  client = await within(connectAsync(tb.url, { reconnectPeriod: 0, connectTimeout: 3000 }, false), 'mqtt.js connect');
  const sub = new Collector(client);
  await within(client.subscribeAsync(opts.subscribe ?? ['sensors/#', 'edgeway/#', 'homeassistant/#'], { qos: 1 }), 'subscribe');
  adapter = new SerialAdapter(tb.broker.context('serial'), config.serial, { gatewayId: opts.gatewayId ?? 'test-gw', version: 'test' });
  await adapter.start();
  const broker = tb;
  const theAdapter = adapter;

  const ptyOf = (name: string): PtyPair => {
    const p = ptys.get(name);
    if (p === undefined) throw new Error(`no port ${name}`);
    return p;
  };
  return {
    tb: broker,
    dir,
    adapter: theAdapter,
    sub,
    log: lines,
    options: config.serial,
    pty: ptyOf,
    device(name) {
      const d = devices.get(name);
      if (d === undefined) throw new Error(`port ${name} has no open device end`);
      return d;
    },
    async plug(name) {
      const pty = ptyOf(name);
      let d: Device | undefined;
      // The device end is opened before the gateway can see its path, as with a real device
      // that is powered when its port appears.
      await pty.start(5000, async () => {
        d = await Device.open(pty.devicePath);
      });
      if (d === undefined) throw new Error('device end not opened');
      devices.set(name, d);
      return d;
    },
    async unplug(name) {
      await devices.get(name)?.close();
      devices.delete(name);
      await ptyOf(name).stop();
    },
  };
}

/** The adapter's status of port `name`. */
export function statusOf(f: SerialFixture, name: string) {
  const s = f.adapter.status().find((p) => p.name === name);
  if (s === undefined) throw new Error(`no status for ${name}`);
  return s;
}
