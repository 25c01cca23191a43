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
  private readonly bridges: PortBridge[];

  /** No side effects: nothing is opened, subscribed or scheduled until start(). */
  constructor(ctx: GatewayContext, ports: readonly SerialPortOptions[], options: SerialAdapterOptions) {
    const deps = {
      opener: options.opener ?? openSerialPort,
      gatewayId: options.gatewayId,
      version: options.version,
      random: options.random ?? Math.random,
      now: options.now ?? Date.now,
      openTimeoutMs: options.openTimeoutMs ?? OPEN_TIMEOUT_MS,
      reservedTopics: reservedTopicsOf(ports),
    };
    this.bridges = ports.map((p) => new PortBridge(ctx, p, deps));
  }

  /**
   * Starts every port. Resolves once each port's first open attempt has succeeded or failed; ports
   * that are missing keep being retried in the background. Bounded by the open timeout. Idempotent.
   */
  async start(): Promise<void> {
    await Promise.all(this.bridges.map((b) => b.start()));
  }

  /** Closes every port and timer; each port publishes `offline`. Idempotent; bounded by `timeoutMs`. */
  async stop(timeoutMs = 2000): Promise<void> {
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
