import t from 'tap';
import { defaultConfig, validateConfig } from '../../config/load';
import { problemsOf } from '../helpers/config';

t.test('storage defaults (README "Storage")', async (t) => {
  t.same(defaultConfig().storage, {
    path: './data/edgeway.db',
    sync: 'normal',
    flushInterval: 50,
    outbox: { maxMessages: 1_000_000, maxBytes: 256 * 1024 * 1024, whenFull: 'drop-oldest' },
  });
  const partial = validateConfig({ storage: { sync: 'full', outbox: { maxBytes: '64MiB' } } }, 'test').storage;
  t.equal(partial.sync, 'full');
  t.equal(partial.outbox.maxBytes, 64 * 1024 * 1024, 'byte sizes as text');
  t.equal(partial.outbox.maxMessages, 1_000_000, 'other keys keep their defaults');
  t.ok(Object.isFrozen(partial.outbox), 'frozen');
});

t.test('storage errors: every one at once, with its path', async (t) => {
  const problems = problemsOf({
    storage: { path: '', sync: 'fast', flushInterval: -1, outbox: { maxMessages: 0, maxBytes: 'lots', whenFull: 'panic', extra: 1 }, other: true },
  });
  const paths = problems.map((p) => p.slice(0, p.indexOf(':'))).sort();
  t.same(
    paths,
    [
      'storage.flushInterval',
      'storage.other',
      'storage.outbox.extra',
      'storage.outbox.maxBytes',
      'storage.outbox.maxMessages',
      'storage.outbox.whenFull',
      'storage.path',
      'storage.sync',
    ],
    problems.join('\n'),
  );
  t.match(problems.find((p) => p.startsWith('storage.sync')), /normal.*full/, 'lists the allowed values');
  t.match(problems.find((p) => p.startsWith('storage.outbox.whenFull')), /drop-oldest.*drop-new/);
  t.match(problems.find((p) => p.startsWith('storage.outbox.maxBytes')), /byte size/);
});
