/**
 * Stand-alone Aedes broker for the comparison:
 *   node dist/scripts/bench/aedes-server.js --port <port> [--host 127.0.0.1] [--aedes /abs/path/aedes.js]
 * Default options, in-memory persistence, plain TCP. Prints "listening" when ready.
 * --aedes lets the harness run this script from a snapshot outside the project tree.
 */
import net from 'node:net';
import { pathToFileURL } from 'node:url';

function argValue(name: string, fallback: string): string {
  const i = process.argv.indexOf(name);
  return i >= 0 && process.argv[i + 1] !== undefined ? process.argv[i + 1]! : fallback;
}

async function main(): Promise<void> {
  const port = Number(argValue('--port', '1883'));
  const host = argValue('--host', '127.0.0.1');
  const entry = argValue('--aedes', '');
  // aedes 1.x is ESM-only; a dynamic import is the supported way in from CommonJS.
  const { Aedes } = entry
    ? ((await import(pathToFileURL(entry).href)) as typeof import('aedes', { with: { 'resolution-mode': 'import' } }))
    : await import('aedes');
  const broker = await Aedes.createBroker();
  const server = net.createServer(broker.handle);
  server.listen(port, host, () => {
    process.stdout.write(`aedes listening on ${host}:${port}\n`);
  });
  // Exit straight away: a graceful broker.close() with thousands of buffered
  // messages can overflow aedes' stack, and there is no state worth saving.
  const shutdown = (): void => {
    server.close();
    process.exit(0);
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((err: unknown) => {
  process.stderr.write(`aedes-server: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
