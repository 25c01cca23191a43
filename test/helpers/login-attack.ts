/**
 * Password guessing against a broker, for the failed-login back-off tests (issue 8): one login
 * attempt timed from socket open to CONNACK, and a brute force of many, sequential or in
 * parallel, from a chosen source address. Independent of how the broker checks passwords (a test
 * gate or the real password file).
 */
import { RawClient } from './raw-client';

export interface LoginOptions {
  readonly port: number;
  /** Source address (e.g. '127.0.0.2': on Linux all of 127/8 is local); default 127.0.0.1. */
  readonly localAddress?: string;
  readonly username: string;
  readonly password: string;
  readonly protocolVersion?: 4 | 5;
  readonly clientId?: string;
  /** How long to wait for the CONNACK. */
  readonly timeoutMs?: number;
}

export interface LoginResult {
  /** From opening the socket to the CONNACK (or to the close without one), in ms. */
  readonly ms: number;
  /** The CONNACK's return code (3.1.1) or reason code (5); null when closed without a CONNACK. */
  readonly code: number | null;
}

let attemptCounter = 0;

/** One login attempt; the connection is closed afterwards (with DISCONNECT when it was accepted). */
export async function tryLogin(options: LoginOptions): Promise<LoginResult> {
  const started = performance.now();
  const protocolVersion = options.protocolVersion ?? 4;
  const client = await RawClient.connectSocket(options.port, protocolVersion, options.localAddress);
  try {
    client.send({
      cmd: 'connect',
      protocolId: 'MQTT',
      protocolVersion,
      clean: true,
      clientId: options.clientId ?? `attempt-${process.pid}-${++attemptCounter}`,
      keepalive: 0,
      username: options.username,
      password: Buffer.from(options.password),
    });
    const connack = await client.next('connack', options.timeoutMs ?? 30_000);
    const code = connack.returnCode ?? connack.reasonCode ?? 0;
    if (code === 0) client.disconnect();
    return { ms: performance.now() - started, code };
  } catch (err) {
    if (!client.closed) throw err;
    return { ms: performance.now() - started, code: null };
  } finally {
    client.destroy();
  }
}

export interface BruteForceOptions extends Omit<LoginOptions, 'password'> {
  /** Tried in order, by `parallel` connections at once, each taking the next when it is answered. */
  readonly passwords: readonly string[];
  readonly parallel?: number;
}

/** Tries every password; the results are in the order of `passwords`. */
export async function bruteForce(options: BruteForceOptions): Promise<LoginResult[]> {
  const results: LoginResult[] = new Array<LoginResult>(options.passwords.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < options.passwords.length) {
      const i = next++;
      results[i] = await tryLogin({ ...options, password: options.passwords[i] as string });
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.parallel ?? 1) }, worker));
  return results;
}

/** The median of `values` (NaN for none). */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  if (sorted.length === 0) return NaN;
  const mid = sorted.length >> 1;
  return sorted.length % 2 === 1 ? (sorted[mid] as number) : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
}
