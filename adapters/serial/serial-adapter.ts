import type { GatewayContext } from '../../gateway/broker';
import type { SerialPortOptions } from './options';
import { OPEN_TIMEOUT_MS, PortBridge, type PortStatus } from './port-bridge';
import { openSerialPort, type PortOpener } from './port-handle';
import { compileTemplate } from './topics';

export interface SerialAdapterOptions {
  /** Identifies this gateway in Home Assistant unique ids (the composition root passes the hostname). */
  readonly gatewayId: string;
  readonly version: string;
  /** Port factory; tests inject SerialPortMock. Default: the `serialport` package. */
  readonly opener?: PortOpener;
  /** For back-off jitter; tests make it deterministic. */
  readonly random?: () => number;
  readonly now?: () => number;
  /** How long one open() may take before it is abandoned and retried; default OPEN_TIMEOUT_MS. */
  readonly openTimeoutMs?: number;
}

/**
 * The serial bridge: one PortBridge per configured port. It sees the broker only through the
 * GatewayContext (publish, subscribe, logger), so readings take the same path as a network
 * client's PUBLISH: routing, retained handling and hooks (and, later, ACL and the outbox).
 */
export class SerialAdapter {
  private bridges: PortBridge[];
  private readonly deps: ConstructorParameters<typeof PortBridge>[2];
  /** Shared by every bridge (deps.reservedTopics): refilled in place when the port list changes. */
  private readonly reservedTopics: Set<string>;
  private started = false;

  /** No side effects: nothing is opened, subscribed or scheduled until start(). */
  constructor(
    private readonly ctx: GatewayContext,
    ports: readonly SerialPortOptions[],
    options: SerialAdapterOptions,
  ) {
    this.reservedTopics = reservedTopicsOf(ports);
    this.deps = {
      opener: options.opener ?? openSerialPort,
      gatewayId: options.gatewayId,
      version: options.version,
      random: options.random ?? Math.random,
      now: options.now ?? Date.now,
      openTimeoutMs: options.openTimeoutMs ?? OPEN_TIMEOUT_MS,
      reservedTopics: this.reservedTopics,
    };
    this.bridges = ports.map((p) => new PortBridge(ctx, p, this.deps));
  }

  /**
   * A new port list (SIGHUP): ports whose options are unchanged keep running untouched; removed
   * and changed ones are stopped (publishing `offline`), added and changed ones started. Resolves
   * with the names of each kind, after the new ports' first open attempt.
   */
  async reconfigure(ports: readonly SerialPortOptions[], timeoutMs = 2000): Promise<{ added: string[]; removed: string[]; changed: string[] }> {
    const before = new Map(this.bridges.map((b) => [b.options.name, b]));
    const kept: PortBridge[] = [];
    const fresh: PortBridge[] = [];
    const result = { added: [] as string[], removed: [] as string[], changed: [] as string[] };
    const stopping: Promise<void>[] = [];
    for (const p of ports) {
      const old = before.get(p.name);
      before.delete(p.name);
      if (old !== undefined && JSON.stringify(old.options) === JSON.stringify(p)) {
        kept.push(old);
        continue;
      }
      if (old !== undefined) stopping.push(old.stop(timeoutMs));
      (old === undefined ? result.added : result.changed).push(p.name);
      const bridge = new PortBridge(this.ctx, p, this.deps);
      kept.push(bridge);
      fresh.push(bridge);
    }
    for (const [name, old] of before) {
      result.removed.push(name);
      stopping.push(old.stop(timeoutMs));
    }
    // A changed port's old bridge releases the device before its new one opens it.
    await Promise.all(stopping);
    this.bridges = kept;
    const reserved = reservedTopicsOf(ports);
    this.reservedTopics.clear();
    for (const topic of reserved) this.reservedTopics.add(topic);
    if (this.started) await Promise.all(fresh.map((b) => b.start()));
    return result;
  }

  /**
   * Starts every port. Resolves once each port's first open attempt has succeeded or failed; ports
   * that are missing keep being retried in the background. Bounded by the open timeout. Idempotent.
   */
  async start(): Promise<void> {
    this.started = true;
    await Promise.all(this.bridges.map((b) => b.start()));
  }

  /** Closes every port and timer; each port publishes `offline`. Idempotent; bounded by `timeoutMs`. */
  async stop(timeoutMs = 2000): Promise<void> {
    this.started = false;
    await Promise.all(this.bridges.map((b) => b.stop(timeoutMs)));
  }

  /** Per-port status, for metrics (the same object as the retained status topic's JSON). */
  status(): PortStatus[] {
    return this.bridges.map((b) => b.status());
  }
}

/** Every port's write and status topic: readings must never be published to any of them. */
function reservedTopicsOf(ports: readonly SerialPortOptions[]): Set<string> {
  const reserved = new Set<string>();
  for (const p of ports) {
    reserved.add(compileTemplate(p.statusTopic, p.name).prefix);
    if (p.write !== undefined) reserved.add(compileTemplate(p.write, p.name).prefix);
  }
  return reserved;
}
