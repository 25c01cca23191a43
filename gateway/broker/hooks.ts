import type { Message } from './types';

/**
 * Extension points for adapters (DESIGN.md "Layering"). Three kinds:
 *  - gate: may be async, first deny wins (authenticate);
 *  - transform: sync, may rewrite or reject (none yet);
 *  - notify: sync, observe only, must not throw (published, clientConnected, clientDisconnected).
 * One array per event, so an unused hook costs one length check on the hot path.
 */
export interface ClientInfo {
  readonly clientId: string;
  readonly remote: string;
  readonly protocolVersion: number;
}

export interface Credentials {
  readonly username: string | undefined;
  readonly password: Buffer | undefined;
}

/** Gate: resolve true to allow, false to refuse with "not authorized". */
export type AuthenticateHook = (client: ClientInfo, credentials: Credentials) => boolean | Promise<boolean>;
/**
 * Notify: a message was accepted for routing. `origin` is null for in-process publishers;
 * `source` names the publisher either way (a client id, or what an adapter passed, e.g.
 * `serial:<port>`), so an adapter can recognise — and not echo — its own messages.
 */
export type PublishedHook = (message: Message, origin: ClientInfo | null, source: string) => void;
export type ClientHook = (client: ClientInfo) => void;

export class Hooks {
  readonly authenticate: AuthenticateHook[] = [];
  readonly published: PublishedHook[] = [];
  readonly clientConnected: ClientHook[] = [];
  readonly clientDisconnected: ClientHook[] = [];
}
