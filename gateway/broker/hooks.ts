import type { Message } from './types';

/**
 * Extension points for adapters (DESIGN.md "Layering"). Three kinds:
 *  - gate: may be async, first deny wins (authenticate, authMethods); authorisation gates
 *    (authorizePublish, authorizeSubscribe, authorizeRead) are sync: they run per message;
 *  - transform: sync, may rewrite or reject (none yet);
 *  - notify: sync, observe only, must not throw (published, clientConnected, clientDisconnected).
 * One array per event, so an unused hook costs one length check on the hot path.
 */
export interface ClientInfo {
  readonly clientId: string;
  readonly remote: string;
  readonly protocolVersion: number;
  /**
   * The user name the client authenticated as: from CONNECT, or the CN of its TLS client
   * certificate on a listener with useIdentityAsUsername; undefined for an anonymous client.
   */
  readonly username: string | undefined;
}

export interface Credentials {
  readonly username: string | undefined;
  readonly password: Buffer | undefined;
  /**
   * The user name was taken from a verified TLS client certificate (useIdentityAsUsername): the
   * certificate is the proof, there is no password to check.
   */
  readonly fromCertificate?: boolean;
}

/** Gate: resolve true to allow, false to refuse with "not authorized". */
export type AuthenticateHook = (client: ClientInfo, credentials: Credentials) => boolean | Promise<boolean>;

/**
 * What an enhanced authentication method answers to one step: accept (with optional data for
 * the client), refuse, or ask the client for another step with `data` (AUTH, reason 0x18).
 */
export type EnhancedAuthResult =
  | { readonly outcome: 'success'; readonly data?: Buffer }
  | { readonly outcome: 'continue'; readonly data: Buffer }
  | { readonly outcome: 'fail' };

/**
 * Gate for MQTT 5 enhanced authentication (section 4.12) with one Authentication Method. `step`
 * is called with the Authentication Data of CONNECT, then with that of each AUTH the client
 * sends after a 'continue', and again when the client re-authenticates (AUTH, reason 0x19). A
 * client asking for a method no hook supports is refused with CONNACK 0x8C.
 */
export interface EnhancedAuthenticator {
  readonly method: string;
  step(client: ClientInfo, data: Buffer | undefined): EnhancedAuthResult | Promise<EnhancedAuthResult>;
}
/**
 * Notify: a message was accepted for routing. `origin` is null for in-process publishers;
 * `source` names the publisher either way (a client id, or what an adapter passed, e.g.
 * `serial:<port>`), so an adapter can recognise — and not echo — its own messages.
 */
/**
 * Authorisation gates (sync, per message; first deny wins). `client` is null for an in-process
 * publisher, named by `source` (`serial:<port>`, `redis:downlink`).
 *  - authorizePublish: may `client` publish to `topic`?
 *  - authorizeSubscribe: may it subscribe to `filter` (checked at SUBSCRIBE)?
 *  - authorizeRead: may a message on `topic` be delivered to it (checked per delivery, as a
 *    wildcard filter can match topics the client may not read)?
 */
export type AuthorizePublishHook = (client: ClientInfo | null, source: string, topic: string) => boolean;
export type AuthorizeSubscribeHook = (client: ClientInfo, filter: string) => boolean;
export type AuthorizeReadHook = (client: ClientInfo, topic: string) => boolean;

export type PublishedHook = (message: Message, origin: ClientInfo | null, source: string) => void;
export type ClientHook = (client: ClientInfo) => void;

export class Hooks {
  readonly authenticate: AuthenticateHook[] = [];
  /** Enhanced authentication methods (MQTT 5), one per method name; the first with the name is used. */
  readonly authMethods: EnhancedAuthenticator[] = [];
  readonly authorizePublish: AuthorizePublishHook[] = [];
  readonly authorizeSubscribe: AuthorizeSubscribeHook[] = [];
  readonly authorizeRead: AuthorizeReadHook[] = [];
  readonly published: PublishedHook[] = [];
  readonly clientConnected: ClientHook[] = [];
  readonly clientDisconnected: ClientHook[] = [];
}
