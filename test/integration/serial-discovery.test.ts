/**
 * Home Assistant discovery through a real broker and client: one retained config per key seen,
 * valid JSON with the documented fields, availability tied to the port's retained status topic.
 */
import t from 'tap';
import { serialFixture, type Received } from '../helpers/serial';

interface Availability {
  topic: string;
  value_template: string;
  payload_available: string;
  payload_not_available: string;
}
interface DiscoveryConfig {
  name: string;
  unique_id: string;
  state_topic: string;
  qos: number;
  availability: Availability[];
  device: { identifiers: string[]; name: string; manufacturer: string; model: string; sw_version: string };
  origin: { name: string; sw_version: string };
  value_template?: string;
  unit_of_measurement?: string;
  device_class?: string;
  state_class?: string;
}

const configs = (messages: Received[]) => messages.filter((m) => m.topic.startsWith('homeassistant/'));

t.test('a retained discovery config per key seen, once', async (t) => {
  const f = await serialFixture(
    t,
    [
      {
        name: 'greenhouse',
        format: 'json',
        homeAssistant: { deviceName: 'Greenhouse sensor', keys: { temp: { unit: '°C', deviceClass: 'temperature' } } },
      },
    ],
    { gatewayId: 'pi-garden' },
  );
  const dev = f.device('greenhouse');
  await dev.write('{"temp":21.5,"state":"open","soil":{"moisture":33}}\n');
  await dev.write('{"temp":21.6,"state":"closed","soil":{"moisture":34}}\n');
  await f.sub.waitFor((m) => m.topic === 'sensors/greenhouse/soil/moisture' && m.payload === '34', 'the second line');

  const got = configs(f.sub.messages);
  t.same(
    got.map((m) => m.topic),
    [
      'homeassistant/sensor/edgeway_pi-garden/greenhouse_temp/config',
      'homeassistant/sensor/edgeway_pi-garden/greenhouse_state/config',
      `homeassistant/sensor/edgeway_pi-garden/${got[2]?.topic.split('/')[3]}/config`,
    ],
    'one config per key, published once although the keys were seen twice',
  );
  t.match(got[2]?.topic, /^homeassistant\/sensor\/edgeway_pi-garden\/greenhouse_soil_moisture_[0-9a-f]{8}\/config$/, 'nested key: safe object id');
  const temp = JSON.parse(got[0]?.payload ?? '') as DiscoveryConfig;
  t.same(temp, {
    name: 'temp',
    unique_id: 'edgeway_pi-garden_greenhouse_temp',
    state_topic: 'sensors/greenhouse/temp',
    qos: 0,
    availability: [
      {
        topic: 'edgeway/serial/greenhouse/status',
        value_template: '{{ value_json.state }}',
        payload_available: 'online',
        payload_not_available: 'offline',
      },
    ],
    device: {
      identifiers: ['edgeway_pi-garden_greenhouse'],
      name: 'Greenhouse sensor',
      manufacturer: 'edgeway',
      model: 'serial sensor',
      sw_version: 'test',
    },
    origin: { name: 'edgeway', sw_version: 'test' },
    unit_of_measurement: '°C',
    device_class: 'temperature',
    state_class: 'measurement',
  });
  const state = JSON.parse(got[1]?.payload ?? '') as DiscoveryConfig;
  t.equal(state.state_topic, 'sensors/greenhouse/state');
  t.equal(state.state_class, undefined, 'a text value has no state_class (Home Assistant would reject it)');
  const moisture = JSON.parse(got[2]?.payload ?? '') as DiscoveryConfig;
  t.equal(moisture.state_topic, 'sensors/greenhouse/soil/moisture');
  t.equal(moisture.name, 'soil/moisture');
  const ids = new Set(got.map((m) => (JSON.parse(m.payload) as DiscoveryConfig).unique_id));
  t.equal(ids.size, 3, 'unique ids differ');
  for (const key of ['temp', 'state']) {
    const retained = f.tb.broker.retained.get(`homeassistant/sensor/edgeway_pi-garden/greenhouse_${key}/config`);
    t.ok(retained !== undefined, `${key}: retained, so Home Assistant finds it after a restart`);
  }

  // Availability: the topic it names carries the retained status JSON whose `state` is online.
  const status = f.tb.broker.retained.get(temp.availability[0]?.topic ?? '');
  t.equal((JSON.parse(status?.payload.toString() ?? '{}') as { state?: string }).state, 'online', 'availability topic says online');
});

t.test('wrapped payloads get a value_template; kv keys are announced too', async (t) => {
  const f = await serialFixture(t, [{ name: 'meter', format: 'kv', wrap: true, homeAssistant: true }]);
  await f.device('meter').write('power=230.5\n');
  const m = await f.sub.waitForTopic('homeassistant/sensor/edgeway_test-gw/meter_power/config');
  const config = JSON.parse(m.payload) as DiscoveryConfig;
  t.equal(config.value_template, '{{ value_json.value }}');
  t.equal(config.state_class, 'measurement');
  t.equal(config.device.name, 'meter', 'device name defaults to the port name');
  const reading = await f.sub.waitForTopic('sensors/meter/power');
  t.ok(f.sub.messages.indexOf(m) < f.sub.messages.indexOf(reading), 'the config comes before the first reading');
});

t.test('homeAssistant.maxKeys bounds the announced keys', async (t) => {
  const f = await serialFixture(t, [{ name: 'many', format: 'json', homeAssistant: { maxKeys: 2 } }]);
  await f.device('many').write('{"a":1,"b":2,"c":3,"d":4}\n');
  await f.sub.waitForTopic('sensors/many/d');
  t.equal(configs(f.sub.messages).length, 2, 'two configs');
  const s = f.adapter.status()[0];
  t.same(s?.discovery, { published: 2, skipped: 2 });
  t.equal(f.sub.messages.filter((x) => x.topic.startsWith('sensors/many/')).length, 4, 'all readings still published');
});
