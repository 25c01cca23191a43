/**
 * Authentication and authorisation from files (issue 8): `auth.passwordFile` (password-file.ts)
 * and `auth.aclFile` (acl.ts), plugged into the broker through its hooks. gateway/app.ts creates
 * it only with an `auth` section, so a gateway without one registers no hook and pays nothing.
 *
 * - authenticate: a client without a user name is let in iff anonymous access is allowed
 *   (`allowAnonymous`, default: only without a password file). With a password file a user
 *   name must be in it with a matching password; a name taken from a verified TLS client
 *   certificate needs no password (as Mosquitto's use_identity_as_username). Without a password
 *   file, names are not checked (Mosquitto does the same): everyone is let in iff anonymous access
 *   is allowed.
 * - authorizePublish / authorizeSubscribe / authorizeRead: the ACL, only with an ACL file.
 *   In-process publishers are checked as internal users: `serial:<port>` publishes as user
 *   `serial` with client id `serial:<port>`, the Redis adapter as user `redis` with client id
 *   `redis:downlink` or `redis:status` — the user name is what comes before the first ':'.
 *   Messages from other gateways of a cluster (`trustedSource`) were authorised where they were
 *   published and are not checked again.
 *
 * `reload()` (SIGHUP) reads both files again; a file with problems is logged with every problem
 * and the one in use stays.
 */
import { readFile } from 'node:fs/promises';
import { createHmac, randomBytes } from 'node:crypto';
import { errorMessage, type ClientInfo, type Credentials, type GatewayContext, type Hooks } from '../../gateway/broker';
import { Acl, type AclClient, type Access } from './acl';
import { parsePasswordFile } from './password-file';
import { decoyHash, verifyPassword, type PasswordHash } from './password-hash';

export interface AuthSettings {
  readonly passwordFile?: string | undefined;
  readonly aclFile?: string | undefined;
  readonly allowAnonymous?: boolean | undefined;
}

export interface AuthAdapterOptions {
  /** In-process sources whose messages were authorised elsewhere (another gateway of the cluster). */
  readonly trustedSource?: (source: string) => boolean;
}

/** A password or ACL file that cannot be used; `problems` names file and line of each. */
export class AuthFileError extends Error {
  readonly code = 'EDGEWAY_ERR_AUTH_FILE';
  constructor(readonly problems: readonly string[]) {
    super(`auth: ${problems.length === 1 ? 'problem' : 'problems'} in the auth files:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'AuthFileError';
  }
}

export interface AuthStats {
  readonly users: number;
  readonly loginsAccepted: number;
  readonly loginsRefused: number;
  /** Logins refused because maxPendingVerifications were already running. */
  readonly loginsBusy: number;
}

/** Password verifications running at once; beyond it a login is refused (a flood cannot queue unbounded work). */
const MAX_PENDING_VERIFICATIONS = 64;
/** Successful (user, password) pairs remembered, so a reconnecting device skips the slow hash. */
const MAX_REMEMBERED_LOGINS = 1024;
/** ACL decisions remembered per client (by topic); the map starts over when full. */
const MAX_DECISIONS_PER_CLIENT = 1024;

/** What a reload did, for the SIGHUP log line. */
export interface AuthReloadResult {
  readonly changed: readonly string[];
  readonly problems: readonly string[];
}

interface Loaded {
  readonly users: ReadonlyMap<string, PasswordHash> | undefined;
  readonly acl: Acl | undefined;
}

export class AuthAdapter {
  private settings: AuthSettings;
  private users: ReadonlyMap<string, PasswordHash> | undefined;
  private decisions: AclDecisions | undefined;
  /** Verified (user, HMAC of password) pairs of the current password file; see rememberKey. */
  private remembered = new Set<string>();
  /** Keys the remembered passwords: a process-local secret, so the set holds nothing reusable. */
  private readonly rememberSecret = randomBytes(32);
  private readonly decoy = decoyHash();
  private pending = 0;
  private counters = { loginsAccepted: 0, loginsRefused: 0, loginsBusy: 0 };
  private readonly internalClients = new Map<string, AclClient>();
  private registered = false;
  /**
   * How each connected client got in (the broker passes one ClientInfo per connection): the hash
   * its password matched, or how it came in without one. A reload checks them against the new file.
   */
  private readonly logins = new WeakMap<ClientInfo, PasswordHash | 'certificate' | 'without-password'>();

  constructor(
    private readonly ctx: GatewayContext,
    settings: AuthSettings,
    private readonly options: AuthAdapterOptions = {},
  ) {
    this.settings = settings;
  }

  /** Reads the files and registers the hooks; rejects with AuthFileError on any problem. */
  async start(): Promise<void> {
    const { loaded, problems } = await load(this.settings);
    if (problems.length > 0) throw new AuthFileError(problems);
    this.use(loaded);
    this.register();
    this.ctx.logger.info('auth: files loaded', this.describe());
  }

  /**
   * SIGHUP: the files (of `settings`, the reloaded section) read again. With a problem nothing
   * changes — the files and settings in use stay — and the problems are returned.
   */
  async reload(settings: AuthSettings): Promise<AuthReloadResult> {
    const { loaded, problems } = await load(settings);
    if (problems.length > 0) return { changed: [], problems };
    const changed: string[] = [];
    if (JSON.stringify(settings) !== JSON.stringify(this.settings)) changed.push('settings');
    if (loaded.users !== undefined || this.users !== undefined) changed.push(`users: ${usersDiff(this.users, loaded.users)}`);
    if (loaded.acl !== undefined || this.decisions !== undefined) changed.push(loaded.acl === undefined ? 'acl: none' : `acl: ${describeAcl(loaded.acl)}`);
    this.settings = settings;
    this.use(loaded);
    this.unregister();
    this.register();
    return { changed, problems };
  }

  /** Removes the hooks (the gateway stops, or a reload dropped the `auth` section). */
  stop(): void {
    this.unregister();
  }

  stats(): AuthStats {
    return { users: this.users?.size ?? 0, ...this.counters };
  }

  private use(loaded: Loaded): void {
    this.users = loaded.users;
    this.remembered = new Set();
    // New decisions for every client: cached ones were made under the old rules.
    this.decisions = loaded.acl === undefined ? undefined : new AclDecisions(loaded.acl);
  }

  private describe(): Record<string, string | number | boolean> {
    return {
      passwordFile: this.settings.passwordFile ?? 'none',
      users: this.users?.size ?? 0,
      aclFile: this.settings.aclFile ?? 'none',
      allowAnonymous: this.allowAnonymous,
    };
  }

  private get allowAnonymous(): boolean {
    return this.settings.allowAnonymous ?? this.settings.passwordFile === undefined;
  }

  private register(): void {
    if (this.registered) return;
    this.registered = true;
    const hooks = this.ctx.hooks;
    hooks.authenticate.push(this.authenticate);
    // No ACL file: everything is allowed, and the hot path keeps its one length check.
    if (this.decisions === undefined) return;
    hooks.authorizePublish.push(this.authorizePublish);
    hooks.authorizeSubscribe.push(this.authorizeSubscribe);
    hooks.authorizeRead.push(this.authorizeRead);
  }

  private unregister(): void {
    if (!this.registered) return;
    this.registered = false;
    const hooks: Hooks = this.ctx.hooks;
    remove(hooks.authenticate, this.authenticate);
    remove(hooks.authorizePublish, this.authorizePublish);
    remove(hooks.authorizeSubscribe, this.authorizeSubscribe);
    remove(hooks.authorizeRead, this.authorizeRead);
  }

  private readonly authenticate = async (client: ClientInfo, credentials: Credentials): Promise<boolean> => {
    const login = await this.check(client, credentials);
    if (login === null) {
      this.counters.loginsRefused++;
      return false;
    }
    this.counters.loginsAccepted++;
    this.logins.set(client, login);
    return true;
  };

  /** How the client gets in, or null when it does not. */
  private async check(client: ClientInfo, credentials: Credentials): Promise<PasswordHash | 'certificate' | 'without-password' | null> {
    if (credentials.fromCertificate === true) return 'certificate'; // the verified certificate is the proof
    const users = this.users;
    if (credentials.username === undefined || users === undefined) return this.allowAnonymous ? 'without-password' : null;
    const user = credentials.username;
    const password = credentials.password ?? Buffer.alloc(0);
    const key = this.rememberKey(user, password);
    const hash = users.get(user);
    if (hash !== undefined && this.remembered.has(key)) return hash;
    if (this.pending >= MAX_PENDING_VERIFICATIONS) {
      this.counters.loginsBusy++;
      this.ctx.logger.warn('auth: too many logins being verified at once; login refused', { clientId: client.clientId, remote: client.remote, pending: this.pending });
      return null;
    }
    this.pending++;
    try {
      // An unknown user costs one verification too: the timing does not tell which users exist.
      const matches = await verifyPassword(password, hash ?? this.decoy);
      if (!matches || hash === undefined) return null;
      // Reloaded while the hash ran: the login holds only if the user's password is still the same.
      const current = this.users === users ? hash : this.users?.get(user);
      if (current === undefined || !current.key.equals(hash.key)) return null;
      if (this.remembered.size >= MAX_REMEMBERED_LOGINS) this.remembered.clear();
      this.remembered.add(key);
      return current;
    } finally {
      this.pending--;
    }
  }

  /**
   * After a reload: is the login of this connected client still good? (Mosquitto disconnects the
   * clients a reload no longer authorises.) A password login stays if its user's line is the one
   * it matched — not removed, password not changed; a client without a password stays if anonymous
   * access (or, without a password file, any name) is still allowed; a certificate login stays.
   */
  stillAllowed(client: ClientInfo): boolean {
    const login = this.logins.get(client);
    if (login === 'certificate') return true;
    if (client.username === undefined || this.users === undefined) return this.allowAnonymous;
    if (login === undefined || typeof login === 'string') return false; // never checked against a password file
    const hash = this.users.get(client.username);
    return hash !== undefined && hash.key.equals(login.key) && hash.salt.equals(login.salt);
  }

  /** What a successful login is remembered by: never the password, only an HMAC with a secret of this process. */
  private rememberKey(user: string, password: Buffer): string {
    return createHmac('sha256', this.rememberSecret).update(user).update('\u0000').update(password).digest('base64');
  }

  private readonly authorizePublish = (client: ClientInfo | null, source: string, topic: string): boolean => {
    const decisions = this.decisions;
    if (decisions === undefined) return true;
    if (client !== null) return decisions.allows(client, topic, 'write');
    if (this.options.trustedSource?.(source) === true) return true;
    return decisions.allows(this.internalClient(source), topic, 'write');
  };

  private readonly authorizeSubscribe = (client: ClientInfo, filter: string): boolean => this.decisions?.acl.allowsSubscription(client, filter) ?? true;

  private readonly authorizeRead = (client: ClientInfo, topic: string): boolean => this.decisions?.allows(client, topic, 'read') ?? true;

  /** `serial:greenhouse` → user `serial`, client id `serial:greenhouse`; one object per source (decision cache key). */
  private internalClient(source: string): AclClient {
    let client = this.internalClients.get(source);
    if (client === undefined) {
      const colon = source.indexOf(':');
      client = { clientId: source, username: colon < 0 ? source : source.slice(0, colon) };
      // Sources are a handful of adapter names; bounded all the same.
      if (this.internalClients.size >= MAX_DECISIONS_PER_CLIENT) this.internalClients.clear();
      this.internalClients.set(source, client);
    }
    return client;
  }
}

/**
 * The ACL's answers remembered per client and topic: a sensor publishing to the same topic, or a
 * `#` subscriber receiving the same topics, costs one map lookup instead of a walk over the
 * rules. Per client object (the broker passes one ClientInfo per connection), so a closed
 * connection's decisions go with it; a reload makes a new AclDecisions.
 */
class AclDecisions {
  private readonly byClient = new WeakMap<AclClient, Map<string, number>>();
  /** The last client asked about and its map: a subscriber receiving a stream asks again and again. */
  private lastClient: AclClient | undefined;
  private lastKnown = new Map<string, number>();

  constructor(readonly acl: Acl) {}

  allows(client: AclClient, topic: string, access: Access): boolean {
    let known = this.lastKnown;
    if (client !== this.lastClient) {
      known = this.byClient.get(client) ?? new Map<string, number>();
      if (known.size === 0) this.byClient.set(client, known);
      this.lastClient = client;
      this.lastKnown = known;
    }
    // Bits: 1 read known, 2 read allowed, 4 write known, 8 write allowed.
    const shift = access === 'read' ? 0 : 2;
    const bits = known.get(topic) ?? 0;
    if ((bits & (1 << shift)) !== 0) return (bits & (2 << shift)) !== 0;
    const allowed = this.acl.allows(client, topic, access);
    if (known.size >= MAX_DECISIONS_PER_CLIENT && bits === 0) known.clear();
    known.set(topic, bits | (1 << shift) | (allowed ? 2 << shift : 0));
    return allowed;
  }
}

function remove<T>(list: T[], item: T): void {
  const i = list.indexOf(item);
  if (i >= 0) list.splice(i, 1);
}

async function readText(path: string, what: string): Promise<string | { problem: string }> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    return { problem: `${path}: cannot read the ${what}: ${errorMessage(err)}` };
  }
}

/** Every problem of the password and ACL files of `settings` (`edgeway check-config`); none when they can be used. */
export async function authFileProblems(settings: AuthSettings): Promise<string[]> {
  return (await load(settings)).problems;
}

/** Reads and parses the files of `settings`; every problem of both, or what they hold. */
async function load(settings: AuthSettings): Promise<{ loaded: Loaded; problems: string[] }> {
  const problems: string[] = [];
  let users: ReadonlyMap<string, PasswordHash> | undefined;
  let acl: Acl | undefined;
  if (settings.passwordFile !== undefined) {
    const text = await readText(settings.passwordFile, 'password file');
    if (typeof text === 'string') {
      const parsed = parsePasswordFile(text, settings.passwordFile);
      problems.push(...parsed.problems);
      users = parsed.users;
    } else {
      problems.push(text.problem);
    }
  }
  if (settings.aclFile !== undefined) {
    const text = await readText(settings.aclFile, 'ACL file');
    if (typeof text === 'string') {
      const parsed = Acl.parse(text, settings.aclFile);
      problems.push(...parsed.problems);
      acl = parsed.acl;
    } else {
      problems.push(text.problem);
    }
  }
  return { loaded: { users, acl }, problems };
}

function usersDiff(before: ReadonlyMap<string, PasswordHash> | undefined, after: ReadonlyMap<string, PasswordHash> | undefined): string {
  const old = before ?? new Map<string, PasswordHash>();
  const now = after ?? new Map<string, PasswordHash>();
  let added = 0;
  let removed = 0;
  let changed = 0;
  for (const [user, hash] of now) {
    const was = old.get(user);
    if (was === undefined) added++;
    else if (!was.key.equals(hash.key)) changed++;
  }
  for (const user of old.keys()) if (!now.has(user)) removed++;
  return `${now.size} (${added} added, ${removed} removed, ${changed} with a new password)`;
}

function describeAcl(acl: Acl): string {
  const { users, patterns, anonymousRules } = acl.size;
  return `${users} users, ${patterns} patterns, ${anonymousRules} anonymous rules`;
}
