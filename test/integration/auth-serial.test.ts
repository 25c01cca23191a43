/**
 * Serial readings pass the same ACL as clients (issue 8 part 3): a port publishes as the internal
 * user `serial` with client id `serial:<port>`. A reading to a topic that user may not write is
 * dropped and counted; an allowed one is delivered. Real ptys (socat), the real serial bridge,
 * a real MQTT subscriber.
 */
import t from 'tap';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuthAdapter } from '../../adapters/auth';
import { waitFor } from '../helpers/broker';
import { serialFixture } from '../helpers/serial';

t.test('a serial port publishing to a denied topic: nothing delivered, counted; an allowed one delivered', async (t) => {
  const f = await serialFixture(t, [
    { name: 'allowed', format: 'kv' },
    { name: 'blocked', format: 'kv' },
  ]);
  const acl = join(f.dir, 'acl');
  // The fixture's subscriber is anonymous: it may read everything; the serial user may write
  // the readings of port "allowed" and the status topics.
  writeFileSync(
    acl,
    `topic read #

user serial
topic write edgeway/serial/#
topic write sensors/allowed/#
`,
  );
  const auth = new AuthAdapter(f.tb.broker.context('auth'), { aclFile: acl, allowAnonymous: true });
  await auth.start();
  const denied = f.tb.broker.metrics.denied;
  const before = denied.publish;

  await f.device('blocked').write('temp=99\n');
  await f.device('allowed').write('temp=21.5\n');
  const allowed = await f.sub.waitForTopic('sensors/allowed/temp');
  t.equal(allowed.payload, '21.5', 'the allowed reading is delivered');
  await waitFor(() => denied.publish > before, 3000, 'the denied reading to be counted');
  t.equal(denied.publish - before, 1, 'the denied reading is counted');
  // Lines of one port are published in order; the blocked port's line was written first.
  await f.device('blocked').write('temp=100\n');
  await f.device('allowed').write('temp=22\n');
  await f.sub.waitFor((m) => m.topic === 'sensors/allowed/temp' && m.payload === '22', 'the second allowed reading');
  await waitFor(() => denied.publish - before === 2, 3000, 'the second denied reading');
  t.same(
    f.sub.messages.filter((m) => m.topic.startsWith('sensors/')).map((m) => `${m.topic}=${m.payload}`),
    ['sensors/allowed/temp=21.5', 'sensors/allowed/temp=22'],
    'nothing from the blocked port reached the subscriber',
  );
  t.ok(
    f.log.some((l) => l.msg === 'publication not authorised; message dropped' && l.fields?.clientId === 'serial:blocked' && l.fields.topic === 'sensors/blocked/temp'),
    'logged with the internal client id and the topic',
  );
  t.equal(f.log.filter((l) => l.msg === 'publication not authorised; message dropped').length, 1, 'logged at a bounded rate (once per minute)');
});
