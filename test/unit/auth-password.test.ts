/**
 * Password hashes and the password file (adapters/auth): edgeway's scrypt format, the `$6$` and
 * `$7$` lines of a real `mosquitto_passwd`, the file's syntax and the edits of `edgeway passwd`.
 */
import t, { type Test } from 'tap';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { decoyHash, hashPassword, parsePasswordFile, parsePasswordHash, SCRYPT_DEFAULTS, verifyPassword, withoutUser, withUser, type PasswordHash } from '../../adapters/auth';

function parsed(text: string): PasswordHash {
  const hash = parsePasswordHash(text);
  if (typeof hash === 'string') throw new Error(hash);
  return hash;
}

/** A password file written by the installed mosquitto_passwd (Debian package mosquitto). */
function mosquittoPasswd(t: Test, options: string[], user: string, password: string): string {
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-passwd-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'passwd');
  execFileSync('mosquitto_passwd', [...options, '-c', '-b', file, user, password], { stdio: 'pipe', timeout: 10_000 });
  return readFileSync(file, 'utf8');
}

t.test('edgeway scrypt: hashPassword writes a line verifyPassword accepts for that password only', async (t) => {
  const line = await hashPassword(Buffer.from('correct horse'));
  t.match(line, /^\$edgeway-scrypt\$N=16384,r=8,p=2\$[A-Za-z0-9+/]{22}==\$[A-Za-z0-9+/]{43}=$/);
  const hash = parsed(line);
  t.same(hash.kind === 'scrypt' ? hash.params : undefined, SCRYPT_DEFAULTS);
  t.equal(await verifyPassword(Buffer.from('correct horse'), hash), true);
  t.equal(await verifyPassword(Buffer.from('correct horse '), hash), false);
  t.equal(await verifyPassword(Buffer.alloc(0), hash), false);
  t.not(await hashPassword(Buffer.from('correct horse')), line, 'a fresh salt each time');
  // Other parameters are read from the line itself.
  const light = await hashPassword(Buffer.from('pw'), { N: 1024, r: 8, p: 1 });
  t.match(light, /^\$edgeway-scrypt\$N=1024,r=8,p=1\$/);
  t.equal(await verifyPassword(Buffer.from('pw'), parsed(light)), true);
});

t.test('a $7$ line of mosquitto_passwd (PBKDF2-SHA512, its default) is verified as it is', async (t) => {
  const text = mosquittoPasswd(t, [], 'alice', 'S3cret!');
  t.match(text, /^alice:\$7\$\d+\$/);
  const file = parsePasswordFile(text, 'passwd');
  t.same(file.problems, []);
  const hash = file.users.get('alice') as PasswordHash;
  t.equal(hash.kind, 'pbkdf2-sha512');
  t.equal(await verifyPassword(Buffer.from('S3cret!'), hash), true);
  t.equal(await verifyPassword(Buffer.from('s3cret!'), hash), false);
});

t.test('a $6$ line (mosquitto_passwd -H sha512, the Mosquitto 1.x format) is verified as it is', async (t) => {
  const text = mosquittoPasswd(t, ['-H', 'sha512'], 'bob', 'hunter2');
  t.match(text, /^bob:\$6\$/, 'the installed mosquitto_passwd still writes $6$');
  const hash = parsePasswordFile(text, 'passwd').users.get('bob') as PasswordHash;
  t.equal(hash.kind, 'sha512');
  t.equal(await verifyPassword(Buffer.from('hunter2'), hash), true);
  t.equal(await verifyPassword(Buffer.from('hunter3'), hash), false);
});

t.test('hash lines that are not usable say why', async (t) => {
  const cases: [string, RegExp][] = [
    ['plain', /not a password hash/],
    ['$5$abc$def', /unknown hash type \$5\$/],
    ['$6$c2FsdA==$c2hvcnQ=', /hash is 5 bytes, expected 64/],
    ['$6$not base64!$AAAA', /not base64/],
    ['$7$0$c2FsdA==$AAAA', /iterations must be a whole number/],
    ['$7$abc$c2FsdA==$AAAA', /iterations must be a whole number/],
    ['$edgeway-scrypt$N=1000,r=8,p=1$c2FsdA==$' + Buffer.alloc(32).toString('base64'), /power of two/],
    ['$edgeway-scrypt$N=16384,r=8$c2FsdA==$AAAA', /N=…,r=…,p=…/],
    ['$edgeway-scrypt$N=1048576,r=64,p=1$c2FsdA==$' + Buffer.alloc(32).toString('base64'), /need more than 256 MiB/],
  ];
  for (const [text, why] of cases) t.match(parsePasswordHash(text), why, text);
});

t.test('an unknown user is verified against a decoy no password matches', async (t) => {
  const decoy = decoyHash();
  t.equal(decoy.kind, 'scrypt', 'the same cost as an edgeway user');
  t.equal(await verifyPassword(Buffer.from(''), decoy), false);
  t.equal(await verifyPassword(Buffer.from('anything'), decoy), false);
});

const SCRYPT_LINE = '$edgeway-scrypt$N=1024,r=8,p=1$c2FsdHNhbHRzYWx0c2FsdA==$' + Buffer.alloc(32, 1).toString('base64');

t.test('the password file: comments, blank lines, CRLF, and problems with file and line', async (t) => {
  const ok = parsePasswordFile(`# users of the greenhouse gateway\n\nalice:${SCRYPT_LINE}\r\n  bob : ${SCRYPT_LINE}  \n`, '/etc/edgeway/passwd');
  t.same(ok.problems, []);
  t.same([...ok.users.keys()], ['alice', 'bob'], 'blanks around the name and hash are trimmed, as Mosquitto does');

  const bad = parsePasswordFile(`alice:${SCRYPT_LINE}\nno colon here\n:${SCRYPT_LINE}\ncarol:$9$x$y\nalice:${SCRYPT_LINE}\n`, '/etc/edgeway/passwd');
  t.same(bad.problems, [
    '/etc/edgeway/passwd:2: expected user:hash',
    '/etc/edgeway/passwd:3: empty user name',
    '/etc/edgeway/passwd:4: user "carol": unknown hash type $9$ (expected $edgeway-scrypt$, $6$ or $7$)',
    '/etc/edgeway/passwd:5: user "alice" appears twice',
  ]);
});

t.test('edgeway passwd edits: only the user’s own line changes', async (t) => {
  const original = `# comment stays\nalice:$7$101$old\r\n\nbob:$6$kept$as-is\n`;
  const changed = withUser(original, 'alice', 'NEW');
  t.equal(changed, `# comment stays\nalice:NEW\r\n\nbob:$6$kept$as-is\n`, 'replaced in place, its CRLF kept');
  t.equal(withUser(original, 'carol', 'C'), `${original}carol:C\n`, 'a new user is appended');
  t.equal(withUser('alice:x', 'bob', 'B'), 'alice:x\nbob:B\n', 'a missing final newline is added first');
  t.equal(withUser('', 'bob', 'B'), 'bob:B\n');
  t.same(withoutUser(original, 'alice'), { text: `# comment stays\n\nbob:$6$kept$as-is\n`, found: true });
  t.same(withoutUser(original, 'carol'), { text: original, found: false });
  t.same(withoutUser('#alice:x\n', 'alice'), { text: '#alice:x\n', found: false }, 'a commented-out line is not the user');
});
