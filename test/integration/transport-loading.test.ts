/**
 * TLS and WebSocket support cost idle memory (scripts/bench/footprint.ts), so a gateway whose
 * listeners are all plain MQTT must not load `node:tls`, `node:http` or `ws`; they are loaded with
 * the first listener that needs them. Each case runs the real Gateway in a fresh Node process.
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import t from 'tap';
import { makeTestPki } from '../helpers/certificates';
import { tempDir } from '../helpers/sqlite';

const ROOT = join(__dirname, '..', '..');
const dir = tempDir(t, 'edgeway-transport-loading-');
const pki = makeTestPki(dir);

/** Starts a Gateway with `listeners` in a child process; what it had loaded once started. */
async function loadedWith(listeners: Record<string, unknown>[]): Promise<{ tls: boolean; http: boolean; ws: boolean }> {
  const script = `
    const { Gateway } = require(${JSON.stringify(join(ROOT, 'gateway', 'app.js'))});
    const { validateConfig } = require(${JSON.stringify(join(ROOT, 'config', 'load.js'))});
    const { silentLogger } = require(${JSON.stringify(join(ROOT, 'gateway', 'broker', 'index.js'))});
    (async () => {
      const config = validateConfig({ listeners: ${JSON.stringify(listeners)}, sys: { interval: 0 }, storage: { path: ${JSON.stringify(join(dir, 'db', 'edgeway.db'))} } }, 'test');
      const gateway = await Gateway.start({ config, version: 'test', logger: silentLogger });
      const builtin = (name) => process.moduleLoadList.includes('NativeModule ' + name);
      const ws = Object.keys(require.cache).some((path) => path.includes('/node_modules/ws/'));
      process.stdout.write(JSON.stringify({ tls: builtin('tls'), http: builtin('http'), ws }));
      await gateway.stop();
    })().catch((err) => { console.error(err); process.exit(1); });`;
  const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { timeout: 20_000 });
  return JSON.parse(stdout) as { tls: boolean; http: boolean; ws: boolean };
}

const files = { cert: pki.server.cert, key: pki.server.key };

t.test('plain MQTT listeners load neither tls, http nor ws', async (t) => {
  t.same(await loadedWith([{ protocol: 'mqtt', host: '127.0.0.1', port: 0 }]), { tls: false, http: false, ws: false });
});

t.test('an mqtts listener loads tls only', async (t) => {
  t.same(await loadedWith([{ protocol: 'mqtts', host: '127.0.0.1', port: 0, ...files }]), { tls: true, http: false, ws: false });
});

t.test('a ws or wss listener loads ws (which brings http and tls)', async (t) => {
  t.same(await loadedWith([{ protocol: 'ws', host: '127.0.0.1', port: 0 }]), { tls: true, http: true, ws: true });
  t.same(await loadedWith([{ protocol: 'wss', host: '127.0.0.1', port: 0, ...files }]), { tls: true, http: true, ws: true });
});
