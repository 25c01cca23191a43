/**
 * Clean-up for the long-running scripts (chaos, soak), which use the test helpers outside tap:
 * the helpers register "kill this PID" / "remove this folder" with `teardown`, and `run()` does
 * all of it, newest first, each step bounded. A signal (Ctrl-C, a CI timeout's SIGTERM) runs it
 * too, so no redis-server, socat or gateway outlives the script.
 */
import type { Teardowns } from '../../test/helpers/processes';

/** The longest one clean-up step may take (ms): a hung step must not keep the script alive. */
const STEP_TIMEOUT_MS = 10_000;

export class Cleanup implements Teardowns {
  private readonly steps: (() => unknown)[] = [];
  private running: Promise<void> | undefined;

  teardown(fn: () => unknown): void {
    this.steps.push(fn);
  }

  /** Runs every step once, newest first (a process before the folder it runs in); idempotent. */
  run(): Promise<void> {
    this.running ??= (async () => {
      for (const step of this.steps.splice(0).reverse()) {
        let timer: NodeJS.Timeout | undefined;
        try {
          await Promise.race([
            Promise.resolve().then(step),
            new Promise((resolve) => {
              timer = setTimeout(resolve, STEP_TIMEOUT_MS);
            }),
          ]);
        } catch (err) {
          process.stderr.write(`clean-up step failed: ${String(err)}\n`);
        } finally {
          clearTimeout(timer);
        }
      }
    })();
    return this.running;
  }

  /** On SIGINT/SIGTERM/SIGHUP: clean up, then exit with 130 (interrupted). */
  exitOnSignals(name: string): void {
    for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(signal, () => {
        process.stderr.write(`\n${name}: ${signal}, cleaning up\n`);
        void this.run().finally(() => process.exit(130));
      });
    }
  }
}

/**
 * Runs a script's `main` with a fresh `Cleanup` and exits with its code, cleaning up first; a
 * thrown error is printed and exits 2 (the run itself failed, as opposed to a finding: 1).
 */
export function runScript(name: string, main: (cleanup: Cleanup) => Promise<number>): void {
  const cleanup = new Cleanup();
  cleanup.exitOnSignals(name);
  main(cleanup).then(
    async (code) => {
      await cleanup.run();
      process.exit(code);
    },
    async (err: unknown) => {
      process.stderr.write(`${name}: the run failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      await cleanup.run();
      process.exit(2);
    },
  );
}
