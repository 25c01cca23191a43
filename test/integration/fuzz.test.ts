/**
 * The short protocol fuzz run for CI (issue 9): 100,000 fuzz packets — malformed, truncated,
 * oversized, mutated, out of order; MQTT 3.1, 3.1.1 and 5.0 — at the real gateway (a child process)
 * over 40 concurrent connections, while reference clients publish and subscribe at QoS 1. See
 * test/fuzz/harness.ts for the checks; the long run is scripts/fuzz.ts.
 *
 * The seed is fixed so that CI explores the same inputs each time and a failure reproduces with
 * `node dist/scripts/fuzz.js --packets 100000 --connections 40 --seed <seed>`; set
 * EDGEWAY_FUZZ_SEED to try another.
 */
import t from 'tap';
import { formatResult, runFuzz } from '../fuzz/harness';

const SEED = Number(process.env.EDGEWAY_FUZZ_SEED ?? 20261126);
const PACKETS = 100_000;

// About a minute on an idle 2-core machine; the run itself stops after 150 s whatever it reached.
t.setTimeout(300_000);

t.test(`fuzz: ${PACKETS} packets at the gateway, seed ${SEED}`, async (t) => {
  const result = await runFuzz({ seed: SEED, packets: PACKETS, connections: 40, maxDurationMs: 150_000, rssBoundMb: 64, hangMs: 30_000 });
  t.comment(formatResult(result));
  t.same(result.failures, [], 'no crash, no uncaught error, no hang, no message lost, RSS back within the bound, new clients served, clean stop');
  for (const ref of result.reference) {
    t.ok(ref.acknowledged > 0, `reference client (level ${ref.level}): ${ref.acknowledged} messages acknowledged`);
    t.equal(ref.missingCount, 0, `reference client (level ${ref.level}): none missing`);
  }
  // The fuzz reached the gateway's checks rather than bouncing off one: it saw each kind of refusal.
  for (const reason of ['malformed-packet', 'protocol-error', 'packet-too-large', 'connect-refused']) {
    t.ok((result.closeReasons[reason] ?? 0) > 0, `the gateway closed connections for ${reason} (${result.closeReasons[reason] ?? 0})`);
  }
  t.ok((result.gateway.edgeway_messages_received_total ?? 0) > 1000, `valid traffic got through too: ${result.gateway.edgeway_messages_received_total} PUBLISH messages received`);
});
