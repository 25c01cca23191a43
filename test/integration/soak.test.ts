/**
 * The soak script (issue 9 part 3) end to end, briefly: `node dist/scripts/soak.js` with 100
 * connections for 15 s must start everything, sample, write its CSV, chart and summary, and stop
 * cleanly — so the long unattended run (`--minutes 30`) is known to work. Whether memory levels off
 * cannot be judged in 15 s; that verdict is tested in test/unit/soak-growth.test.ts. Here exit 1
 * (a growth finding) is accepted only with its finding printed; 2 (the run failed) never.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { startProcess } from '../helpers/processes';

t.setTimeout(120_000);

const SOAK = join(__dirname, '..', '..', 'scripts', 'soak.js');
const out = mkdtempSync(join(tmpdir(), 'edgeway-soak-test-'));
t.teardown(() => rmSync(out, { recursive: true, force: true }));

t.test('a short soak samples the gateway and writes its CSV, chart and summary', async (t) => {
  const run = startProcess(t, process.execPath, [SOAK, '--minutes', '0.25', '--interval', '1', '--connections', '100', '--publish-interval', '1', '--out', out], 100_000);
  const { code } = await run.exited;
  const output = run.stdout + run.stderr;
  t.ok(code === 0 || (code === 1 && /FAIL:\n {2}(RSS|descriptors) grow/.test(output)), `exit code ${code}`, { output: output.slice(-4000) });

  const [header, ...rows] = readFileSync(join(out, 'soak.csv'), 'utf8').trim().split('\n');
  t.equal(header, 't_s,rss_mb,fds,lag_p50_ms,lag_p99_ms,lag_max_ms,outbox_messages,uplink_backlog,clients,heap_used_mb,published,received');
  t.ok(rows.length >= 10, `${rows.length} samples`);
  for (const row of rows) {
    const [ts, rss, fds, , lagP99, , outbox, , clients] = (row as string).split(',').map(Number);
    t.ok((ts as number) > 0 && (rss as number) > 10 && (fds as number) > 100, `t ${ts} s: RSS ${rss} MB, ${fds} descriptors`);
    t.ok((lagP99 as number) >= 0 && (outbox as number) >= 0, `t ${ts} s: lag ${lagP99} ms, outbox ${outbox}`);
    t.equal(clients, 100, `t ${ts} s: every connection open`);
  }

  const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as { pass: boolean; load: { published: number; acked: number; received: number; dropped: number; serialReadings: number }; streamEntriesAdded: number };
  t.equal(summary.pass, code === 0);
  t.ok(summary.load.published > 0 && summary.load.acked > 0 && summary.load.received > summary.load.published, `load: ${JSON.stringify(summary.load)}`);
  t.equal(summary.load.dropped, 0, 'no connection dropped');
  // Everything was published under sensors/#, the uplink's topics: nearly all of it reached the
  // stream (the last readings and QoS 0 messages of the stop may not).
  const sent = summary.load.published + summary.load.serialReadings;
  t.ok(summary.load.serialReadings > 0 && summary.streamEntriesAdded >= 0.99 * sent && summary.streamEntriesAdded <= sent, `${summary.load.serialReadings} readings; ${summary.streamEntriesAdded} of ${sent} in the uplink stream`);

  const svg = readFileSync(join(out, 'soak.svg'), 'utf8');
  t.ok((svg.match(/<polyline /g)?.length ?? 0) >= 4, 'a line per panel (RSS, descriptors, lag, outbox; a failed scrape splits one)');
  t.match(output, /soak summary \(0\.25 min, \d+ samples/);
  t.match(readFileSync(join(out, 'gateway.log'), 'utf8'), /edgeway started/);
});
