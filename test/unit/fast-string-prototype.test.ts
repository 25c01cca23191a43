/**
 * String.prototype stays a fast-mode object in a gateway with a `redis` section
 * (adapters/redis/fast-string-prototype.ts): checked in a child Node with V8's natives syntax,
 * after loading ioredis alone (the cause) and after loading the Redis adapter (the cure).
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import t from 'tap';

const ADAPTER = join(__dirname, '..', '..', 'adapters', 'redis', 'index.js');

/** %HasFastProperties(String.prototype) in a fresh Node after `require(module)`. */
function fastAfterLoading(module: string): boolean {
  const script = `require(${JSON.stringify(module)}); process.stdout.write(String(%HasFastProperties(String.prototype)));`;
  const out = execFileSync(process.execPath, ['--allow-natives-syntax', '-e', script], { encoding: 'utf8', timeout: 30_000 });
  t.match(out, /^(true|false)$/, `child printed a verdict for ${module}`);
  return out === 'true';
}

t.test('loading ioredis alone leaves String.prototype in dictionary mode (the reason for the workaround)', async (t) => {
  t.equal(fastAfterLoading('ioredis'), false, 'if this fails, ioredis no longer subclasses String: makeStringPrototypeFast can go');
});

t.test('loading the Redis adapter makes it fast again', async (t) => {
  t.equal(fastAfterLoading(ADAPTER), true);
});

t.test('a fresh Node has it fast (the check itself works)', async (t) => {
  t.equal(fastAfterLoading('node:path'), true);
});
