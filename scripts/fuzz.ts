/**
 * The long protocol fuzz run (issue 9): malformed, truncated, oversized and mutated MQTT 3.1.1
 * and 5.0 packets at a gateway child process over many connections, while reference clients
 * publish and subscribe; see test/fuzz/harness.ts for what is checked.
 *
 *   node dist/scripts/fuzz.js [--packets 1000000] [--seed N] [--connections 50]
 *                             [--max-minutes 60] [--rss-bound-mb 64] [--replay i,j,…]
 *
 * Prints the seed first (a failing run is replayed with the same --seed; --replay sends only the
 * named connections, one after the other), progress every 5 s, then a summary. Exit code 0 when
 * every check passed, 1 otherwise, 2 on a usage error.
 */
import { formatResult, runFuzz } from '../test/fuzz/harness';

function usage(problem: string): never {
  process.stderr.write(`fuzz: ${problem}\nusage: node dist/scripts/fuzz.js [--packets N] [--seed N] [--connections N] [--max-minutes N] [--rss-bound-mb N] [--replay i,j,…]\n`);
  process.exit(2);
}

function parseArgs(argv: readonly string[]): Record<string, string> {
  const known = new Set(['packets', 'seed', 'connections', 'max-minutes', 'rss-bound-mb', 'replay']);
  const out: Record<string, string> = {};
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i]?.replace(/^--/, '') ?? '';
    const value = argv[i + 1];
    if (!argv[i]?.startsWith('--') || !known.has(key)) usage(`unknown option ${argv[i]}`);
    if (value === undefined) usage(`${argv[i]} needs a value`);
    out[key] = value;
  }
  return out;
}

function positiveInt(args: Record<string, string>, key: string, fallback: number, min = 1): number {
  const raw = args[key];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min) usage(`--${key} must be an integer ≥ ${min}, not ${JSON.stringify(raw)}`);
  return n;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  const seed = positiveInt(args, 'seed', Math.floor(Math.random() * 0x7fff_ffff), 0);
  const replay = args.replay?.split(',').map((s) => {
    const n = Number(s);
    if (!Number.isInteger(n) || n < 0) usage(`--replay takes connection indices such as 3,17, not ${JSON.stringify(args.replay)}`);
    return n;
  });
  const options = {
    seed,
    packets: positiveInt(args, 'packets', 1_000_000),
    connections: positiveInt(args, 'connections', 50),
    maxDurationMs: positiveInt(args, 'max-minutes', 60) * 60_000,
    rssBoundMb: positiveInt(args, 'rss-bound-mb', 64),
    hangMs: 30_000,
    ...(replay === undefined ? {} : { replay }),
    progress: (line: string) => process.stdout.write(`${line}\n`),
  };
  process.stdout.write(`fuzz: seed ${seed}, ${options.packets} packets, ${options.connections} connections${replay ? `, replaying ${replay.join(',')}` : ''}\n`);
  const result = await runFuzz(options);
  process.stdout.write(`${formatResult(result)}\n`);
  process.exitCode = result.failures.length === 0 ? 0 : 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`fuzz: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
