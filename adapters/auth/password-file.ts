/**
 * The password file (`auth.passwordFile`): one `user:hash` per line (password-hash.ts for the
 * hashes), `#` comments and blank lines — the layout of Mosquitto's password_file, so its files
 * are read as they are. Anything else is a problem named with file and line: at start the gateway
 * refuses to run (exit 78), on SIGHUP the file in use stays.
 *
 * `edgeway passwd` edits the same text with withUser / withoutUser: only the user's own line
 * changes; comments, other users and their hash formats stay byte for byte.
 */
import { parsePasswordHash, type PasswordHash } from './password-hash';

export interface PasswordFile {
  readonly users: ReadonlyMap<string, PasswordHash>;
  /** Every problem as `FILE:LINE: what`; the file is not used when there is one. */
  readonly problems: readonly string[];
}

/** Lines longer than this are refused: the file is read whole, but nothing sane is this long. */
const MAX_LINE = 4096;

interface UserLine {
  readonly index: number;
  readonly user: string;
  readonly hash: string;
}

/** The user lines of `text` (skipping blank lines and comments), and the lines that are neither. */
function scan(text: string): { users: UserLine[]; bad: { index: number; problem: string }[]; lines: string[] } {
  const lines = text.split('\n');
  const users: UserLine[] = [];
  const bad: { index: number; problem: string }[] = [];
  lines.forEach((raw, index) => {
    const line = raw.endsWith('\r') ? raw.slice(0, -1) : raw;
    const trimmed = line.trim();
    if (trimmed.length === 0 || trimmed.startsWith('#')) return;
    if (line.length > MAX_LINE) {
      bad.push({ index, problem: `line longer than ${MAX_LINE} characters` });
      return;
    }
    const colon = line.indexOf(':');
    if (colon < 0) {
      bad.push({ index, problem: 'expected user:hash' });
      return;
    }
    // Mosquitto trims blanks around both parts.
    const user = line.slice(0, colon).trim();
    if (user.length === 0) {
      bad.push({ index, problem: 'empty user name' });
      return;
    }
    users.push({ index, user, hash: line.slice(colon + 1).trim() });
  });
  return { users, bad, lines };
}

/** Parses a password file; `source` (its path) names it in the problems. */
export function parsePasswordFile(text: string, source: string): PasswordFile {
  const { users: lines, bad } = scan(text);
  const problems = bad.map(({ index, problem }) => ({ index, problem }));
  const users = new Map<string, PasswordHash>();
  for (const { index, user, hash } of lines) {
    const parsed = parsePasswordHash(hash);
    if (typeof parsed === 'string') problems.push({ index, problem: `user ${JSON.stringify(user)}: ${parsed}` });
    else if (users.has(user)) problems.push({ index, problem: `user ${JSON.stringify(user)} appears twice` });
    else users.set(user, parsed);
  }
  problems.sort((a, b) => a.index - b.index);
  return { users, problems: problems.map(({ index, problem }) => `${source}:${index + 1}: ${problem}`) };
}

/** Why `user` cannot be a user name of the file, or null. */
export function userNameError(user: string): string | null {
  if (user.length === 0) return 'the user name is empty';
  if (user.includes(':')) return "a user name cannot contain ':'";
  if (/[\r\n\u0000]/.test(user)) return 'a user name cannot contain line breaks or NUL';
  if (user.trim() !== user) return 'a user name cannot start or end with spaces';
  if (user.startsWith('#')) return "a user name cannot start with '#' (it would be a comment)";
  if (Buffer.byteLength(user) > 65_535) return 'the user name is longer than MQTT allows (65,535 bytes)';
  return null;
}

/** `text` with `user`'s line set to `hash`: replaced where it was, or appended. */
export function withUser(text: string, user: string, hash: string): string {
  const { users, lines } = scan(text);
  const line = `${user}:${hash}`;
  const existing = users.find((u) => u.user === user);
  if (existing !== undefined) {
    const crlf = (lines[existing.index] as string).endsWith('\r');
    lines[existing.index] = crlf ? `${line}\r` : line;
    return lines.join('\n');
  }
  const body = text.length === 0 || text.endsWith('\n') ? text : `${text}\n`;
  return `${body}${line}\n`;
}

/** `text` without `user`'s line(s); `found` is false when the user was not there. */
export function withoutUser(text: string, user: string): { text: string; found: boolean } {
  const { users, lines } = scan(text);
  const drop = new Set(users.filter((u) => u.user === user).map((u) => u.index));
  if (drop.size === 0) return { text, found: false };
  return { text: lines.filter((_, i) => !drop.has(i)).join('\n'), found: true };
}
