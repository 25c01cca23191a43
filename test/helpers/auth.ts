/**
 * A whole gateway (gateway/app.ts, with its auth adapter) in this process, on a free loopback
 * port, with a password file and an ACL written into a temporary folder: for the tests of issue 8
 * parts 2 and 3 (test/integration/auth-*.test.ts).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Test } from 'tap';
import type { AddressInfo } from 'node:net';
import { hashPassword } from '../../adapters/auth';
import { validateConfig } from '../../config/load';
import type { Config } from '../../config/schema';
import { Gateway } from '../../gateway/app';
import type { TestBroker } from './broker';
import { recordingLogger, tempDir, type LogLine } from './sqlite';

/** Light scrypt parameters: the tests log in hundreds of times; the defaults are tested in the unit tests. */
export const FAST_SCRYPT = { N: 1024, r: 8, p: 1 };

/** `user:hash` lines for `users` (name → password), hashed with FAST_SCRYPT. */
export async function passwordLines(users: Record<string, string>): Promise<string> {
  let text = '';
  for (const [user, password] of Object.entries(users)) text += `${user}:${await hashPassword(Buffer.from(password), FAST_SCRYPT)}\n`;
  return text;
}

export interface AuthGateway {
  readonly gateway: Gateway;
  /** The gateway's broker and port, in the shape the MQTT test helpers take. */
  readonly tb: TestBroker;
  readonly dir: string;
  readonly passwordFile: string;
  readonly aclFile: string;
  readonly log: LogLine[];
  /** The config the gateway was started with, with `auth` replaced: for Gateway.reload (SIGHUP). */
  config(auth?: Record<string, unknown>): Config;
}

/**
 * Starts a gateway whose `auth` section names the password file and the ACL file written from
 * `passwd` and `acl` (those given), with `auth` added and `limits` as the limits section; stopped when `t` ends.
 */
export async function authGateway(t: Test, files: { passwd?: string; acl?: string }, auth?: Record<string, unknown>, limits: Record<string, unknown> = {}): Promise<AuthGateway> {
  const dir = tempDir(t, 'edgeway-auth-');
  const passwordFile = join(dir, 'passwd');
  const aclFile = join(dir, 'acl');
  if (files.passwd !== undefined) writeFileSync(passwordFile, files.passwd);
  if (files.acl !== undefined) writeFileSync(aclFile, files.acl);
  const section = {
    ...(files.passwd === undefined ? {} : { passwordFile }),
    ...(files.acl === undefined ? {} : { aclFile }),
    ...auth,
  };
  const config = (authSection: Record<string, unknown>): Config =>
    validateConfig({ listeners: [{ protocol: 'mqtt', host: '127.0.0.1', port: 0 }], sys: { interval: 0 }, limits, storage: { path: join(dir, 'edgeway.db') }, auth: authSection }, 'test');
  const logger = recordingLogger();
  const gateway = await Gateway.start({ config: config(section), version: 'test', logger });
  t.teardown(() => gateway.stop());
  const { port } = gateway.broker.addresses()[0] as AddressInfo;
  return {
    gateway,
    tb: { broker: gateway.broker, port, url: `mqtt://127.0.0.1:${port}`, stop: () => gateway.stop() },
    dir,
    passwordFile,
    aclFile,
    log: logger.lines,
    config: (next) => config(next ?? section),
  };
}
