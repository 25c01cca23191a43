import t from 'tap';
import { LineSplitter } from '../../adapters/serial/line-splitter';

function splitter(delimiter: string, max: number) {
  const lines: string[] = [];
  let tooLong = 0;
  const s = new LineSplitter(
    delimiter,
    max,
    (line) => lines.push(line.toString('latin1')),
    () => tooLong++,
  );
  return { s, lines, tooLong: () => tooLong };
}

t.test('splits on \\n; strips one trailing \\r; keeps the partial line for the next chunk', async (t) => {
  const { s, lines } = splitter('\n', 64);
  s.push(Buffer.from('a=1\nb=2\r\nc='));
  t.same(lines, ['a=1', 'b=2']);
  t.equal(s.pendingBytes, 2, 'partial line held');
  s.push(Buffer.from('3\n\n\r\n'));
  t.same(lines, ['a=1', 'b=2', 'c=3', '', ''], 'empty lines are delivered as empty (the bridge skips them)');
  t.equal(s.pendingBytes, 0);
});

t.test('a line split byte by byte is reassembled', async (t) => {
  const { s, lines } = splitter('\n', 64);
  for (const b of Buffer.from('{"temp":21.5}\r\n')) s.push(Buffer.from([b]));
  t.same(lines, ['{"temp":21.5}']);
});

t.test('exactly maxLineLength is accepted (also with \\r\\n); one byte more is dropped', async (t) => {
  const { s, lines, tooLong } = splitter('\n', 8);
  s.push(Buffer.from('12345678\n12345678\r\n123456789\nok\n'));
  t.same(lines, ['12345678', '12345678', 'ok']);
  t.equal(tooLong(), 1);
});

t.test('an over-long line is dropped up to the next delimiter, counted once, memory bounded', async (t) => {
  const { s, lines, tooLong } = splitter('\n', 16);
  s.push(Buffer.from('start\n'));
  for (let i = 0; i < 10_000; i++) {
    s.push(Buffer.alloc(1000, 'x'));
    if (s.pendingBytes > 18) t.fail(`pending ${s.pendingBytes} bytes`);
  }
  t.equal(tooLong(), 1, 'reported once, as soon as it passed the limit');
  t.same(lines, ['start']);
  s.push(Buffer.from('xxx\nnext\n'));
  t.same(lines, ['start', 'next'], 'the line after the delimiter is read normally');
  t.equal(tooLong(), 1);
});

t.test('multi-byte delimiters, also split across chunks', async (t) => {
  const { s, lines } = splitter('\r\n', 32);
  s.push(Buffer.from('a\r'));
  s.push(Buffer.from('\nb\rc\r\n'));
  t.same(lines, ['a', 'b\rc'], 'a lone \\r is data');
  const custom = splitter('||', 32);
  custom.s.push(Buffer.from('x|y||'));
  custom.s.push(Buffer.from('|z||'));
  t.same(custom.lines, ['x|y', '|z'], '"|||" is one delimiter then data');
});

t.test('multi-byte delimiter: over-long lines dropped, next line kept, bounded', async (t) => {
  const { s, lines, tooLong } = splitter('\r\n', 8);
  s.push(Buffer.from('12345678\r\n'));
  s.push(Buffer.alloc(5000, 'y'));
  t.ok(s.pendingBytes <= 10, `pending bounded (${s.pendingBytes})`);
  s.push(Buffer.from('y\r'));
  s.push(Buffer.from('\nok\r\n'));
  t.same(lines, ['12345678', 'ok']);
  t.equal(tooLong(), 1);
});

t.test('reset forgets a partial line (after a reopen)', async (t) => {
  const { s, lines } = splitter('\n', 32);
  s.push(Buffer.from('half a li'));
  s.reset();
  s.push(Buffer.from('whole\n'));
  t.same(lines, ['whole']);
});

t.test('a single-byte custom delimiter does not strip \\r', async (t) => {
  const { s, lines } = splitter(';', 32);
  s.push(Buffer.from('a\r;b;'));
  t.same(lines, ['a\r', 'b']);
});

t.test('delimiter \\r with a device sending \\r\\n: the \\n is stripped from the next line; limit still exact', async (t) => {
  const { s, lines, tooLong } = splitter('\r', 4);
  s.push(Buffer.from('a=1\r\nb=2\r\n'));
  s.push(Buffer.from('cccc\r\nddddd\r\n'));
  t.same(lines, ['a=1', 'b=2', 'cccc'], 'no line starts with \\n; exactly maxLineLength after the \\n is accepted');
  t.equal(tooLong(), 1, 'one byte more is too long');
});
