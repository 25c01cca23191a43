/**
 * The gateway with every kind of listener at once: systemd's status line names each one with its
 * protocol (and path), and a client on each reaches the others.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { connectAsync, type MqttClient } from 'mqtt';
import { Gateway } from '../../gateway/app';
import { validateConfig } from '../../config/load';
import { silentLogger } from '../../gateway/broker';
import { makeTestPki } from '../helpers/certificates';
import { within } from '../helpers/mqtt-client';
import { tempDir } from '../helpers/sqlite';

t.test('mqtt, mqtts, ws and wss listeners in one gateway: the status line names them; messages cross all four', async (t) => {
  const dir = tempDir(t, 'edgeway-listeners-');
  const pki = makeTestPki(dir);
  const files = { cert: pki.server.cert, key: pki.server.key };
  const config = validateConfig(
    {
      listeners: [
        { protocol: 'mqtt', host: '127.0.0.1', port: 0 },
        { protocol: 'mqtts', host: '127.0.0.1', port: 0, ...files },
        { protocol: 'ws', host: '127.0.0.1', port: 0 },
        { protocol: 'wss', host: '127.0.0.1', port: 0, path: '/broker', ...files },
      ],
      sys: { interval: 0 },
      storage: { path: join(dir, 'db', 'edgeway.db') },
    },
    'test',
  );
  const gateway = await Gateway.start({ config, version: 'test', logger: silentLogger });
  t.teardown(() => gateway.stop());
  const [tcp, tls, ws, wss] = gateway.broker.addresses().map((a) => a.port) as [number, number, number, number];
  t.equal(gateway.statusLine(), `0 clients; mqtt 127.0.0.1:${tcp}; mqtts 127.0.0.1:${tls}; ws 127.0.0.1:${ws}/mqtt; wss 127.0.0.1:${wss}/broker`);

  const ca = readFileSync(pki.ca);
  const urls = [`mqtt://127.0.0.1:${tcp}`, `mqtts://127.0.0.1:${tls}`, `ws://127.0.0.1:${ws}/mqtt`, `wss://127.0.0.1:${wss}/broker`];
  const clients: MqttClient[] = [];
  for (const [i, url] of urls.entries()) {
    const c = await within(connectAsync(url, { clientId: `c${i}`, reconnectPeriod: 0, connectTimeout: 3000, ca, servername: 'localhost' }, false), `connect to ${url}`);
    t.teardown(() => within(c.endAsync(true), 'end').catch(() => undefined));
    await c.subscribeAsync('all/#');
    clients.push(c);
  }
  t.match(gateway.statusLine(), /^4 clients; /, 'four clients counted');
  for (const [i, sender] of clients.entries()) {
    const received = clients.map((c) => within(new Promise<string>((resolve) => c.once('message', (_topic, payload) => resolve(payload.toString()))), 'a message'));
    await sender.publishAsync(`all/${i}`, `from ${urls[i]}`);
    t.same(await Promise.all(received), clients.map(() => `from ${urls[i]}`), `a message from ${urls[i]} reaches every listener`);
  }
});
