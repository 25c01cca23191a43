/**
 * What a Connection needs from the byte stream under it. A net.Socket (plain TCP) and a
 * tls.TLSSocket (mqtts) are used as they are, so the TCP hot path pays nothing for this
 * interface; MQTT over WebSockets goes through the thin adapter of ws-listener.ts.
 *
 * Events: 'data' (a chunk of MQTT bytes), 'error', 'close', 'drain' (what was written left
 * the process, as for a net.Socket: only after a `write` returned false).
 */
export interface Transport {
  /** Queues `data`; false when the caller should wait for 'drain' (as net.Socket.write). */
  write(data: Buffer): boolean;
  /** Sends what is queued, then closes. */
  end(): void;
  /** Closes at once, discarding what is queued. */
  destroy(): void;
  /** Stops reading (backpressure: a slow subscriber, held acknowledgements) until resume(). */
  pause(): void;
  resume(): void;
  /**
   * Bytes written but not yet handed to the kernel. The slow-subscriber limits
   * (limits.maxOutgoingBytes, limits.outgoingHighWater) compare against it.
   */
  readonly writableLength: number;
  readonly destroyed: boolean;
  /** The TCP peer (for WebSockets too: never a forwarded-for header). */
  readonly remoteAddress?: string | undefined;
  readonly remotePort?: number | undefined;
  setNoDelay(noDelay?: boolean): unknown;
  on(event: 'data', listener: (chunk: Buffer) => void): unknown;
  on(event: 'error', listener: (err: NodeJS.ErrnoException) => void): unknown;
  on(event: 'close' | 'drain', listener: () => void): unknown;
}
