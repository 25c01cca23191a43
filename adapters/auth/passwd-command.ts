/**
 * `edgeway passwd [--delete] FILE USER` (README "Users and access control"): adds a user to the
 * password file or changes its password, or removes it. The password comes from the terminal
 * without echo (asked twice; both must match), or — when stdin is not a terminal, e.g.
 * `echo "$PW" | edgeway passwd …` — from the first line of stdin. It is never printed or logged.
 *
 * The file is created with mode 0600 when missing. Other lines — users, comments, Mosquitto
 * hashes — stay as they are. The new file is written next to the old one and renamed over it, so a
 * gateway reading it on SIGHUP, or a crash, never sees half a file.
 */
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { errorMessage } from '../../gateway/broker';
import { userNameError, withoutUser, withUser } from './password-file';
import { hashPassword } from './password-hash';

export interface PasswdRequest {
  readonly file: string;
  readonly user: string;
  readonly delete: boolean;
}

/** Where the command talks: the process's streams, replaceable in tests. */
export interface PasswdIo {
  readonly stdin: NodeJS.ReadStream;
  readonly stderr: NodeJS.WritableStream;
}

/** The command's exit codes: sysexits.h EX_USAGE for a bad command line, 1 for anything else. */
export const PASSWD_EXIT = { ok: 0, usage: 64, failed: 1 } as const;

/** A password longer than this is refused: it would only be a mistake (a file piped in). */
const MAX_PASSWORD_BYTES = 4096;

class PasswdFailure extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
  }
}

/** Runs the command; resolves to its exit code after printing what it did (or why not) on stderr. */
export async function runPasswd(request: PasswdRequest, io: PasswdIo = { stdin: process.stdin, stderr: process.stderr }): Promise<number> {
  try {
    const message = await passwd(request, io);
    io.stderr.write(`edgeway: ${message}\n`);
    return PASSWD_EXIT.ok;
  } catch (err) {
    const code = err instanceof PasswdFailure ? err.exitCode : PASSWD_EXIT.failed;
    io.stderr.write(`edgeway passwd: ${errorMessage(err)}\n`);
    return code;
  }
}

async function passwd(request: PasswdRequest, io: PasswdIo): Promise<string> {
  const { file, user } = request;
  const invalid = userNameError(user);
  if (invalid !== null) throw new PasswdFailure(invalid, PASSWD_EXIT.usage);
  const existing = await readExisting(file);
  if (request.delete) {
    if (existing === null) throw new PasswdFailure(`${file} does not exist`, PASSWD_EXIT.failed);
    const { text, found } = withoutUser(existing.text, user);
    if (!found) throw new PasswdFailure(`user ${JSON.stringify(user)} is not in ${file}`, PASSWD_EXIT.failed);
    await writeAtomically(file, text, existing.mode);
    return `user ${JSON.stringify(user)} deleted from ${file}`;
  }
  const password = await readPassword(io);
  const hash = await hashPassword(password);
  password.fill(0);
  const before = existing?.text ?? '';
  const changed = withoutUser(before, user).found;
  await writeAtomically(file, withUser(before, user, hash), existing?.mode ?? 0o600);
  return changed ? `password of ${JSON.stringify(user)} changed in ${file}` : `user ${JSON.stringify(user)} added to ${file}`;
}

async function readExisting(file: string): Promise<{ text: string; mode: number } | null> {
  try {
    const [text, info] = await Promise.all([readFile(file, 'utf8'), stat(file)]);
    return { text, mode: info.mode & 0o777 };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new PasswdFailure(`cannot read ${file}: ${errorMessage(err)}`, PASSWD_EXIT.failed);
  }
}

/** Writes `text` to a new file beside `file` (with `mode`), flushes it to disk and renames it over `file`. */
async function writeAtomically(file: string, text: string, mode: number): Promise<void> {
  const temp = join(dirname(file), `.${basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let handle;
  try {
    handle = await open(temp, 'wx', mode);
    // The mode given to open is reduced by the umask; the file must have exactly `mode` (0600: only the owner reads hashes).
    await handle.chmod(mode);
    await handle.writeFile(text, 'utf8');
    await handle.sync();
    await handle.close();
    handle = undefined;
    await rename(temp, file);
  } catch (err) {
    await handle?.close().catch(() => undefined);
    await unlink(temp).catch(() => undefined);
    throw new PasswdFailure(`cannot write ${file}: ${errorMessage(err)}`, PASSWD_EXIT.failed);
  }
}

/** The password: typed twice on a terminal, or the first line of stdin otherwise. */
async function readPassword(io: PasswdIo): Promise<Buffer> {
  let password: Buffer;
  if (io.stdin.isTTY === true) {
    password = await readHidden(io, 'Password: ');
    const again = await readHidden(io, 'Password again: ');
    const same = again.equals(password);
    again.fill(0);
    if (!same) throw new PasswdFailure('the passwords do not match; nothing changed', PASSWD_EXIT.failed);
  } else {
    password = await readFirstLine(io.stdin);
  }
  if (password.length === 0) throw new PasswdFailure('empty password; nothing changed', PASSWD_EXIT.failed);
  return password;
}

/** The first line of a non-terminal stdin (without its line break), at most MAX_PASSWORD_BYTES. */
function readFirstLine(stdin: NodeJS.ReadStream): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const finish = (): void => {
      stdin.off('data', onData);
      stdin.off('end', finish);
      stdin.off('error', onError);
      stdin.pause();
      const all = Buffer.concat(chunks);
      const newline = all.indexOf(0x0a);
      let line = newline < 0 ? all : all.subarray(0, newline);
      if (line.length > 0 && line[line.length - 1] === 0x0d) line = line.subarray(0, -1);
      if (line.length > MAX_PASSWORD_BYTES) reject(new PasswdFailure(`password longer than ${MAX_PASSWORD_BYTES} bytes`, PASSWD_EXIT.failed));
      else resolve(Buffer.from(line));
      all.fill(0);
    };
    const onData = (chunk: Buffer): void => {
      chunks.push(chunk);
      size += chunk.length;
      if (chunk.includes(0x0a) || size > MAX_PASSWORD_BYTES + 2) finish();
    };
    const onError = (err: Error): void => reject(new PasswdFailure(`cannot read the password from stdin: ${err.message}`, PASSWD_EXIT.failed));
    stdin.on('data', onData);
    stdin.on('end', finish);
    stdin.on('error', onError);
  });
}

/** Reads one line from the terminal in raw mode, echoing nothing. Ctrl-C or Ctrl-D abandons. */
function readHidden(io: PasswdIo, prompt: string): Promise<Buffer> {
  const { stdin, stderr } = io;
  stderr.write(prompt);
  return new Promise((resolve, reject) => {
    const typed: number[] = [];
    const done = (result: Buffer | Error): void => {
      stdin.off('data', onData);
      stdin.setRawMode(false);
      stdin.pause();
      stderr.write('\n');
      if (result instanceof Error) reject(result);
      else resolve(result);
      typed.fill(0);
    };
    const onData = (chunk: Buffer): void => {
      for (const byte of chunk) {
        if (byte === 0x0d || byte === 0x0a) return done(Buffer.from(typed));
        if (byte === 0x03 || byte === 0x04) return done(new PasswdFailure('cancelled; nothing changed', PASSWD_EXIT.failed));
        if (byte === 0x7f || byte === 0x08) typed.pop();
        else if (typed.length < MAX_PASSWORD_BYTES) typed.push(byte);
      }
    };
    stdin.setRawMode(true);
    stdin.resume();
    stdin.on('data', onData);
  });
}
