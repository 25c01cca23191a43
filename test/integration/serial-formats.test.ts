/**
 * Each format end to end: a line written to a real pty (socat) is read by the serial bridge,
 * published through the broker and received by a real MQTT client over TCP.
 */
import t from 'tap';
import type { IPublishPacket } from 'mqtt-packet';
import { mqttClient, within } from '../helpers/mqtt-client';
import { serialFixture, statusOf } from '../helpers/serial';

t.test('json: one message per key, nested keys joined by /', async (t) => {
  const f = await serialFixture(t, [{ name: 'greenhouse', format: 'json' }]);
  await f.device('greenhouse').write('{"temp":21.5,"hum":40,"ok":true,"label":"north","outdoor":{"temp":-3.25},"list":[1,2]}\n');
  const temp = await f.sub.waitForTopic('sensors/greenhouse/temp');
  t.equal(temp.payload, '21.5', 'temp as bare text');
  t.equal(temp.retain, false, 'retain false by default');
  t.equal((await f.sub.waitForTopic('sensors/greenhouse/hum')).payload, '40');
  t.equal((await f.sub.waitForTopic('sensors/greenhouse/ok')).payload, 'true');
  t.equal((await f.sub.waitForTopic('sensors/greenhouse/label')).payload, 'north', 'a string without JSON quotes');
  t.equal((await f.sub.waitForTopic('sensors/greenhouse/outdoor/temp')).payload, '-3.25', 'nested key becomes levels');
  t.equal((await f.sub.waitForTopic('sensors/greenhouse/list')).payload, '[1,2]', 'an array as JSON text');
  const readings = f.sub.messages.filter((m) => m.topic.startsWith('sensors/'));
  t.same(
    readings.map((m) => m.topic),
    ['sensors/greenhouse/temp', 'sensors/greenhouse/hum', 'sensors/greenhouse/ok', 'sensors/greenhouse/label', 'sensors/greenhouse/outdoor/temp', 'sensors/greenhouse/list'],
    'in key order, nothing else',
  );
  const s = statusOf(f, 'greenhouse');
  t.equal(s.linesRead, 1);
  t.equal(s.messagesPublished, 6);
});

t.test('json whole object to one topic, retained, QoS 1, CRLF line ends', async (t) => {
  const f = await serialFixture(t, [{ name: 'station', format: 'json', wholeLine: true, retain: true, qos: 1 }]);
  await f.device('station').write('{"temp":21.5,"hum":40}\r\n');
  const m = await f.sub.waitForTopic('sensors/station');
  t.same(JSON.parse(m.payload), { temp: 21.5, hum: 40 }, 'the object, without the \\r');
  t.equal(m.qos, 1, 'delivered at QoS 1');
  t.equal(f.tb.broker.retained.get('sensors/station')?.payload.toString(), '{"temp":21.5,"hum":40}', 'retained copy kept by the broker');
});

t.test('wrap: {"value":…,"ts":<arrival ms>} with typed values', async (t) => {
  const f = await serialFixture(t, [{ name: 'wrapped', format: 'kv', wrap: true }]);
  const before = Date.now();
  await f.device('wrapped').write('temp=21.5 state=open\n');
  const temp = JSON.parse((await f.sub.waitForTopic('sensors/wrapped/temp')).payload) as { value: unknown; ts: number };
  const after = Date.now();
  t.equal(temp.value, 21.5, 'a number stays a number');
  t.ok(temp.ts >= before && temp.ts <= after, `ts is the arrival time (${before} <= ${temp.ts} <= ${after})`);
  const state = JSON.parse((await f.sub.waitForTopic('sensors/wrapped/state')).payload) as { value: unknown; ts: number };
  t.equal(state.value, 'open', 'text stays text');
  t.equal(state.ts, temp.ts, 'both readings of a line share its arrival time');
});

t.test('kv: "k=v k=v" and "k:v,k:v"', async (t) => {
  const f = await serialFixture(t, [{ name: 'kv', format: 'kv' }]);
  const dev = f.device('kv');
  await dev.write('temp=21.5 hum=40\n');
  await dev.write('pm25:12,pm10:20\n');
  t.equal((await f.sub.waitForTopic('sensors/kv/temp')).payload, '21.5');
  t.equal((await f.sub.waitForTopic('sensors/kv/hum')).payload, '40');
  t.equal((await f.sub.waitForTopic('sensors/kv/pm25')).payload, '12');
  t.equal((await f.sub.waitForTopic('sensors/kv/pm10')).payload, '20');
});

t.test('csv: values mapped to the configured columns; custom topic template', async (t) => {
  const f = await serialFixture(t, [{ name: 'weather', format: 'csv', columns: ['temp', 'hum', 'wind'], topic: 'farm/{name}/{key}/state' }], { subscribe: ['farm/#'] });
  await f.device('weather').write('21.5, 40 ,3.2\n');
  t.equal((await f.sub.waitForTopic('farm/weather/temp/state')).payload, '21.5');
  t.equal((await f.sub.waitForTopic('farm/weather/hum/state')).payload, '40', 'fields are trimmed');
  t.equal((await f.sub.waitForTopic('farm/weather/wind/state')).payload, '3.2');
  await f.device('weather').write('1,2\n');
  await f.device('weather').write('22,,4\n');
  const wind = await f.sub.waitFor((m) => m.topic === 'farm/weather/wind/state' && m.payload === '4', 'the next line');
  t.ok(wind, 'an empty field is skipped, the rest published');
  t.equal(f.sub.on('farm/weather/hum/state').length, 1, 'no empty payload for the empty field');
  t.equal(statusOf(f, 'weather').linesDropped.parse, 1, 'the line with 2 fields was dropped as unparsable');
});

t.test('raw: the line as is; a custom delimiter', async (t) => {
  const f = await serialFixture(t, [
    { name: 'gps', format: 'raw' },
    { name: 'meter', format: 'raw', delimiter: ';' },
  ]);
  await f.device('gps').write('$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47\r\n');
  t.equal((await f.sub.waitForTopic('sensors/gps')).payload, '$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47');
  await f.device('meter').write('A 1.5;B 2.5;');
  await f.sub.waitFor((m) => m.topic === 'sensors/meter' && m.payload === 'B 2.5', 'the second record');
  t.same(
    f.sub.on('sensors/meter').map((m) => m.payload),
    ['A 1.5', 'B 2.5'],
  );
});

t.test('topic injection from sensor data is sanitised', async (t) => {
  const f = await serialFixture(t, [{ name: 'evil', format: 'json' }], { subscribe: ['#', '$SYS/#'] });
  const dev = f.device('evil');
  await dev.write('{"a/#":1}\n');
  await dev.write('{"+":2}\n');
  await dev.write('{"$SYS":3,"":4,"x\\u0000y":5,"../up":6}\n');
  await dev.write(`{"${'k'.repeat(500)}":7}\n`);
  await dev.write('{"done":8}\n');
  await f.sub.waitForTopic('sensors/evil/done');
  const topics = f.sub.messages.filter((m) => !m.topic.startsWith('edgeway/')).map((m) => `${m.topic}=${m.payload}`);
  t.same(
    topics,
    [
      'sensors/evil/a__=1',
      'sensors/evil/_=2',
      'sensors/evil/_SYS=3',
      'sensors/evil/_=4',
      'sensors/evil/x_y=5',
      'sensors/evil/.._up=6',
      `sensors/evil/${'k'.repeat(64)}=7`,
      'sensors/evil/done=8',
    ],
    'no wildcard, no extra level, no $ topic, no empty level, bounded length',
  );
  for (const m of f.sub.messages) t.notOk(m.topic.includes('+') || m.topic.includes('#'), `no wildcard in ${m.topic}`);
  t.equal(statusOf(f, 'evil').linesDropped.invalidTopic, 0, 'sanitised, not dropped');
});

t.test('userProperties: MQTT 5 subscribers get the port and the arrival time as User Properties', async (t) => {
  const f = await serialFixture(t, [{ name: 'tagged', format: 'kv', userProperties: true }]);
  const v5 = await mqttClient(t, f.tb, { protocolVersion: 5, clientId: 'serial-v5' });
  const got: IPublishPacket[] = [];
  v5.on('message', (_topic, _payload, packet) => got.push(packet));
  await within(v5.subscribeAsync('sensors/#', { qos: 0 }), 'subscribe');
  const before = Date.now();
  await f.device('tagged').write('temp=21.5 hum=40\n');
  const plain = await f.sub.waitForTopic('sensors/tagged/hum');
  t.equal(plain.payload, '40', 'the 3.1.1 subscriber gets the reading as usual');
  await within(
    (async () => {
      while (got.length < 2) await new Promise((r) => setTimeout(r, 10));
    })(),
    'two readings at the MQTT 5 subscriber',
  );
  const [temp, hum] = got.map((p) => p.properties?.userProperties as Record<string, string> | undefined);
  t.equal(temp?.port, 'tagged', 'port');
  const arrivedAt = Number(temp?.arrivedAt);
  t.ok(arrivedAt >= before && arrivedAt <= Date.now(), `arrivedAt is the arrival time in ms (${arrivedAt})`);
  t.same(hum, temp, 'both readings of the line carry the same properties');
  t.equal(String(got[0]?.payload), '21.5', 'the payload is unchanged');
});
