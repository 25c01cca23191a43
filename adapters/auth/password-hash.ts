/**
 * Password hashes of the password file (README "Users and access control"). Three formats, one
 * per line after `user:`:
 *
 *  - edgeway's own, written by `edgeway passwd`:
 *      `$edgeway-scrypt$N=16384,r=8,p=2$<salt, base64>$<key, base64>`
 *    scrypt (RFC 7914) from node:crypto, 16-byte random salt, 32-byte key. N=2^14 with r=8 needs
 *    16 MiB per verification (128·N·r) — comfortable on a Raspberry Pi with several logins at
 *    once — and p=2 doubles the work without more memory: about 80 ms on the development machine,
 *    a few hundred on a Pi 4. The parameters are in each line, so they can be raised later
 *    without invalidating existing users.
 *  - Mosquitto's, as `mosquitto_passwd` writes them (Mosquitto 2.0 src/security_default.c):
 *      `$6$<salt, base64>$<sha512(password ‖ salt), base64>`   (`-H sha512`, Mosquitto ≤ 1.6)
 *      `$7$<iterations>$<salt, base64>$<PBKDF2-HMAC-SHA512(password, salt, iterations, 64), base64>`
 *    read as they are, so a Mosquitto password file works unchanged.
 *
 * Verification is asynchronous (libuv's thread pool: the event loop is not blocked by scrypt or
 * PBKDF2) and compares with timingSafeEqual.
 */
import { createHash, pbkdf2, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export interface ScryptParameters {
  readonly N: number;
  readonly r: number;
  readonly p: number;
}

/** The parameters `edgeway passwd` writes (see the module comment for why). */
export const SCRYPT_DEFAULTS: ScryptParameters = { N: 16_384, r: 8, p: 2 };

const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Mosquitto's $6$ and $7$ hashes are SHA-512 sized. */
const MOSQUITTO_HASH_BYTES = 64;
/** Bounds a line of the file may ask for: beyond them one login could occupy a thread for minutes. */
const MAX_SCRYPT_MEMORY = 256 * 1024 * 1024;
const MAX_PBKDF2_ITERATIONS = 10_000_000;

export type PasswordHash =
  | { readonly kind: 'scrypt'; readonly params: ScryptParameters; readonly salt: Buffer; readonly key: Buffer }
  | { readonly kind: 'sha512'; readonly salt: Buffer; readonly key: Buffer }
  | { readonly kind: 'pbkdf2-sha512'; readonly iterations: number; readonly salt: Buffer; readonly key: Buffer };

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Strict base64 (the alphabet Mosquitto and Node write); undefined for anything else. */
function decodeBase64(text: string): Buffer | undefined {
  if (!BASE64.test(text) || text.length % 4 === 1) return undefined;
  const bytes = Buffer.from(text, 'base64');
  return bytes.length === 0 ? undefined : bytes;
}

function scryptMemory({ N, r }: ScryptParameters): number {
  return 128 * N * r;
}

/** A hash string from the password file, or a reason it is not one (for "FILE:LINE: reason"). */
export function parsePasswordHash(text: string): PasswordHash | string {
  const parts = text.split('$');
  // A hash starts with '$', so parts[0] is empty: ['', kind, ...].
  if (parts[0] !== '' || parts.length < 4) return 'not a password hash (expected $edgeway-scrypt$…, $6$… or $7$…)';
  const kind = parts[1];
  if (kind === 'edgeway-scrypt') {
    if (parts.length !== 5) return 'expected $edgeway-scrypt$N=…,r=…,p=…$SALT$KEY';
    const params = parseScryptParameters(parts[2] as string);
    if (typeof params === 'string') return params;
    const salt = decodeBase64(parts[3] as string);
    const key = decodeBase64(parts[4] as string);
    if (salt === undefined || key === undefined) return 'salt or key is not base64';
    if (key.length < 16) return 'key shorter than 16 bytes';
    return { kind: 'scrypt', params, salt, key };
  }
  if (kind === '6') {
    if (parts.length !== 4) return 'expected $6$SALT$HASH';
    return mosquittoHash(parts[2] as string, parts[3] as string, (salt, key) => ({ kind: 'sha512', salt, key }));
  }
  if (kind === '7') {
    if (parts.length !== 5) return 'expected $7$ITERATIONS$SALT$HASH';
    const iterationsText = parts[2] as string;
    const iterations = Number(iterationsText);
    if (!/^\d+$/.test(iterationsText) || iterations < 1 || iterations > MAX_PBKDF2_ITERATIONS) {
      return `iterations must be a whole number from 1 to ${MAX_PBKDF2_ITERATIONS}`;
    }
    return mosquittoHash(parts[3] as string, parts[4] as string, (salt, key) => ({ kind: 'pbkdf2-sha512', iterations, salt, key }));
  }
  return `unknown hash type $${kind}$ (expected $edgeway-scrypt$, $6$ or $7$)`;
}

function mosquittoHash(saltText: string, keyText: string, make: (salt: Buffer, key: Buffer) => PasswordHash): PasswordHash | string {
  const salt = decodeBase64(saltText);
  const key = decodeBase64(keyText);
  if (salt === undefined || key === undefined) return 'salt or hash is not base64';
  if (key.length !== MOSQUITTO_HASH_BYTES) return `hash is ${key.length} bytes, expected ${MOSQUITTO_HASH_BYTES}`;
  return make(salt, key);
}

function parseScryptParameters(text: string): ScryptParameters | string {
  const match = /^N=(\d+),r=(\d+),p=(\d+)$/.exec(text);
  if (match === null) return 'expected scrypt parameters N=…,r=…,p=…';
  const params = { N: Number(match[1]), r: Number(match[2]), p: Number(match[3]) };
  // N must be a power of two above 1 (RFC 7914 section 6).
  if (params.N < 2 || (params.N & (params.N - 1)) !== 0 || params.N > 2 ** 24) return 'scrypt N must be a power of two from 2 to 2^24';
  if (params.r < 1 || params.r > 64 || params.p < 1 || params.p > 64) return 'scrypt r and p must be from 1 to 64';
  if (scryptMemory(params) > MAX_SCRYPT_MEMORY) return `scrypt parameters need more than ${MAX_SCRYPT_MEMORY / 1024 / 1024} MiB`;
  return params;
}

/** The hash line `edgeway passwd` writes for `password`: scrypt with a fresh random salt. */
export async function hashPassword(password: Buffer, params: ScryptParameters = SCRYPT_DEFAULTS): Promise<string> {
  const salt = randomBytes(SALT_BYTES);
  const key = await scryptKey(password, salt, params, KEY_BYTES);
  return formatScrypt(params, salt, key);
}

function formatScrypt({ N, r, p }: ScryptParameters, salt: Buffer, key: Buffer): string {
  return `$edgeway-scrypt$N=${N},r=${r},p=${p}$${salt.toString('base64')}$${key.toString('base64')}`;
}

function scryptKey(password: Buffer, salt: Buffer, params: ScryptParameters, length: number): Promise<Buffer> {
  // maxmem: Node's default (32 MiB) would refuse parameters above N=2^14,r=8 written by a later version.
  const options: ScryptOptions = { N: params.N, r: params.r, p: params.p, maxmem: scryptMemory(params) + 1024 * 1024 };
  return new Promise((resolve, reject) => scrypt(password, salt, length, options, (err, key) => (err === null ? resolve(key) : reject(err))));
}

/** Derives the key `hash` stores from `password`, with the hash's own algorithm and parameters. */
function derive(password: Buffer, hash: PasswordHash): Promise<Buffer> {
  switch (hash.kind) {
    case 'scrypt':
      return scryptKey(password, hash.salt, hash.params, hash.key.length);
    case 'pbkdf2-sha512':
      return new Promise((resolve, reject) => pbkdf2(password, hash.salt, hash.iterations, MOSQUITTO_HASH_BYTES, 'sha512', (err, key) => (err === null ? resolve(key) : reject(err))));
    case 'sha512':
      // One SHA-512 is microseconds: nothing to move off the event loop.
      return Promise.resolve(createHash('sha512').update(password).update(hash.salt).digest());
  }
}

/** Whether `password` matches `hash`, compared in constant time. */
export async function verifyPassword(password: Buffer, hash: PasswordHash): Promise<boolean> {
  const derived = await derive(password, hash);
  return derived.length === hash.key.length && timingSafeEqual(derived, hash.key);
}

/**
 * A hash no password matches (random key), with the default parameters: verified for a user who
 * is not in the file, so that an unknown user costs the same time as a known one and the
 * answer's timing does not reveal which users exist.
 */
export function decoyHash(): PasswordHash {
  return { kind: 'scrypt', params: SCRYPT_DEFAULTS, salt: randomBytes(SALT_BYTES), key: randomBytes(KEY_BYTES) };
}
