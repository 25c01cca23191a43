/**
 * A burst of 10,000 lines written to the pty at once arrives complete and in order at a real
 * MQTT subscriber, within a bounded time.
 */
import t from 'tap';
import { serialFixture, statusOf } from '../helpers/serial';

const LINES = 10_000;
/** Generous for a loaded 2-core CI machine; measured well under 1 s here. */
const DEADLINE_MS = 20_000;

t.test('10,000 lines in one burst: complete and in order', async (t) => {
  const f = await serialFixture(t, [{ name: 'burst', format: 'kv' }], { subscribe: ['sensors/burst/#'] });
  let text = '';
  for (let i = 0; i < LINES; i++) text += `seq=${i} temp=${(20 + (i % 100) / 10).toFixed(1)}\n`;
  const started = Date.now();
  await f.device('burst').write(text);
  await f.sub.waitFor(
    (m) => m.topic === 'sensors/burst/seq' && m.payload === String(LINES - 1),
    `the last of ${LINES} lines`,
    DEADLINE_MS,
  );
  // The last line's temp follows its seq; wait for it so the counts below are final.
  await f.sub.waitFor((m) => f.sub.messages.length >= LINES * 2 && m.topic === 'sensors/burst/temp', 'the last temp', DEADLINE_MS);
  const elapsed = Date.now() - started;
  const seqs = f.sub.on('sensors/burst/seq').map((m) => Number(m.payload));
  t.equal(seqs.length, LINES, 'every line arrived once');
  let inOrder = true;
  for (let i = 0; i < seqs.length; i++) {
    if (seqs[i] !== i) {
      inOrder = false;
      t.fail(`out of order at ${i}: ${seqs[i]}`);
      break;
    }
  }
  t.ok(inOrder, 'in order');
  t.equal(f.sub.on('sensors/burst/temp').length, LINES, 'both keys of every line');
  const s = statusOf(f, 'burst');
  t.equal(s.linesRead, LINES, 'linesRead');
  t.equal(s.messagesPublished, LINES * 2, 'messagesPublished');
  t.same(Object.values(s.linesDropped).reduce((a, b) => a + b, 0), 0, 'nothing dropped');
  t.comment(`${LINES} lines (${text.length} bytes) pty → MQTT subscriber in ${elapsed} ms`);
});
