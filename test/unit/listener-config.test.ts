/**
 * The commented mqtts/ws/wss listener examples of config/edgeway.example.yaml: uncommented, they
 * are valid and show exactly the defaults (as the rest of the example file does, which
 * config.test.ts checks), and the TLS rules of the schema.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { parse } from 'yaml';
import { validateConfig } from '../../config/load';
import { problemsOf } from '../helpers/config';

// dist/test/unit → ../../../config/edgeway.example.yaml (the YAML is not compiled into dist).
const example = readFileSync(join(__dirname, '..', '..', '..', 'config', 'edgeway.example.yaml'), 'utf8');

t.test('the commented listener examples are valid and show the defaults', async (t) => {
  const block = example.slice(example.indexOf('# More listeners'), example.indexOf('\nlimits:'));
  const yaml = block
    .split('\n')
    .filter((line) => line.startsWith('#  '))
    .map((line) => line.slice(1))
    .join('\n');
  const listeners = parse(yaml) as Record<string, unknown>[];
  t.same(
    listeners.map((l) => l.protocol),
    ['mqtts', 'ws', 'wss'],
    'one example per protocol',
  );
  const shown = validateConfig({ listeners }, 'example').listeners;
  const files = { cert: '/etc/edgeway/tls/server.crt', key: '/etc/edgeway/tls/server.key' };
  const defaults = validateConfig({ listeners: [{ protocol: 'mqtts', ...files }, { protocol: 'ws' }, { protocol: 'wss', ...files }] }, 'defaults').listeners;
  t.same(shown, defaults, 'every value shown is the default');
});

t.test('TLS listener rules: cert and key required, ca with requireCertificate, requireCertificate with useIdentityAsUsername', async (t) => {
  t.match(problemsOf({ listeners: [{ protocol: 'mqtts' }] }), ['listeners[0].cert: expected string, received undefined', 'listeners[0].key: expected string, received undefined']);
  t.match(problemsOf({ listeners: [{ protocol: 'wss', cert: 'c', key: 'k', requireCertificate: true }] }), [/listeners\[0\]\.ca: required with requireCertificate/]);
  t.match(problemsOf({ listeners: [{ protocol: 'mqtts', cert: 'c', key: 'k', useIdentityAsUsername: true }] }), [/listeners\[0\]\.useIdentityAsUsername: needs requireCertificate: true/]);
  t.match(problemsOf({ listeners: [{ protocol: 'ws', path: 'mqtt' }] }), [/listeners\[0\]\.path: expected an absolute URL path/]);
  t.match(problemsOf({ listeners: [{ protocol: 'mqtts', cert: 'c', key: 'k', minVersion: 'TLSv1.1' }] }), [/listeners\[0\]\.minVersion/]);
});
