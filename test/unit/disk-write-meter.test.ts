import t from 'tap';
import { DiskWriteMeter, readWriteBytes } from '../../adapters/sqlite';

t.test('bytes over the sampled window, from the injected counter', async (t) => {
  let bytes = 1_000;
  const meter = new DiskWriteMeter(() => bytes);
  t.equal(meter.lastHour, null, 'nothing before start');
  meter.start();
  t.teardown(() => meter.stop());
  bytes = 5_096;
  t.equal(meter.lastHour, 4_096, 'younger than an hour: since start');
});

t.test('unavailable counter: null, never a made-up number', async (t) => {
  const meter = new DiskWriteMeter(() => null);
  meter.start();
  t.teardown(() => meter.stop());
  t.equal(meter.lastHour, null);
});

t.test('the Linux counter grows when this process writes to disk', async (t) => {
  const before = readWriteBytes();
  if (before === null) return t.plan(0, '/proc/self/io not readable here');
  const { mkdtempSync, writeFileSync, rmSync, openSync, fsyncSync, closeSync } = await import('node:fs');
  const { join } = await import('node:path');
  const { tmpdir } = await import('node:os');
  const dir = mkdtempSync(join(tmpdir(), 'edgeway-io-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const file = join(dir, 'f');
  writeFileSync(file, Buffer.alloc(256 * 1024, 1));
  const fd = openSync(file, 'r+');
  fsyncSync(fd);
  closeSync(fd);
  const after = readWriteBytes() as number;
  // tmpfs does not count as block I/O; only assert when the temp dir is on a real disk.
  if (after === before) return t.plan(0, 'temp dir is not block-backed (tmpfs): nothing reaches the block layer');
  t.ok(after - before >= 256 * 1024, `write_bytes grew by ${after - before}`);
});
