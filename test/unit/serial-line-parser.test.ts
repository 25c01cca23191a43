import t from 'tap';
import { backoffDelay } from '../../adapters/serial/backoff';
import { BoundedQueue } from '../../adapters/serial/bounded-queue';
import { hasBinary, parseLine, type ParseOptions, type ParseResult } from '../../adapters/serial/line-parser';
import { compileTemplate, MAX_KEY_SEGMENT, renderTopic, sanitiseKeySegment, templateError } from '../../adapters/serial/topics';

const base: ParseOptions = { format: 'json', wholeLine: false, columns: [], separator: ',', maxKeys: 64 };

function readings(result: ParseResult): string[] {
  if (!result.ok) throw new Error(`expected readings, got ${result.reason}: ${result.detail}`);
  return result.readings.map((r) => `${r.key}=${r.text}|${r.json}`);
}

function reason(result: ParseResult): string {
  if (result.ok) throw new Error(`expected a drop, got ${JSON.stringify(result.readings)}`);
  return result.reason;
}

t.test('json: keys, nesting, types', async (t) => {
  t.same(readings(parseLine('{"temp":21.5,"hum":40}', base)), ['temp=21.5|21.5', 'hum=40|40']);
  t.same(readings(parseLine('{"s":"on","b":false,"n":null,"a":[1,"x"]}', base)), ['s=on|"on"', 'b=false|false', 'n=null|null', 'a=[1,"x"]|[1,"x"]']);
  t.same(readings(parseLine('{"out":{"t":-1,"deep":{"x":1}},"e":{}}', base)), ['out/t=-1|-1', 'out/deep/x=1|1'], 'nested objects become levels; {} publishes nothing');
  let deep = '1';
  for (let i = 0; i < 12; i++) deep = `{"k${i}":${deep}}`;
  const r = parseLine(deep, base);
  t.ok(r.ok && r.readings.length === 1 && r.readings[0]?.key.split('/').length === 8, 'depth bounded at 8 levels');
  t.ok(r.ok && r.readings[0]?.text.startsWith('{'), 'the rest published as JSON text');
  t.same(readings(parseLine('{"temp":21.5}', { ...base, wholeLine: true })), ['={"temp":21.5}|{"temp":21.5}'], 'whole object');
});

t.test('json: bad input', async (t) => {
  t.equal(reason(parseLine('{"temp":', base)), 'parse');
  t.equal(reason(parseLine('42', base)), 'parse', 'a scalar is not a reading');
  t.equal(reason(parseLine('[1,2]', base)), 'parse', 'an array is not a reading');
  t.equal(reason(parseLine('null', base)), 'parse');
  t.same(readings(parseLine('{"a":"","b":1}', base)), ['b=1|1'], 'an empty string is skipped: it would delete a retained value');
  t.equal(reason(parseLine('{"a":""}', base)), 'parse', 'nothing but empty values is a drop');
  t.equal(reason(parseLine('{"temp":1', { ...base, wholeLine: true })), 'parse', 'whole-line mode still validates');
  const many = `{${Array.from({ length: 65 }, (_, i) => `"k${i}":${i}`).join(',')}}`;
  t.equal(reason(parseLine(many, base)), 'tooManyKeys');
  t.ok(parseLine(many, { ...base, maxKeys: 65 }).ok, 'maxKeys is the bound');
});

t.test('json: nesting deep enough to overflow JSON.stringify is a parse drop, not a throw', async (t) => {
  // 30,000 nested arrays fit in maxLineLength's 64 KiB; JSON.parse takes them, JSON.stringify
  // (used to publish values below the key-depth bound) overflows the stack.
  const depth = 30_000;
  const arrays = `{"a":${'['.repeat(depth)}${']'.repeat(depth)}}`;
  t.equal(reason(parseLine(arrays, base)), 'parse', 'nested arrays');
  const objects = `{"a":${'{"b":'.repeat(depth / 3)}1${'}'.repeat(depth / 3)}}`;
  t.equal(reason(parseLine(objects, base)), 'parse', 'nested objects below the depth bound');
  t.ok(parseLine(arrays, { ...base, wholeLine: true }).ok, 'whole-line mode publishes the text as received');
});

t.test('kv: both syntaxes, strict pairs', async (t) => {
  const kv: ParseOptions = { ...base, format: 'kv' };
  t.same(readings(parseLine('temp=21.5 hum=40', kv)), ['temp=21.5|21.5', 'hum=40|40']);
  t.same(readings(parseLine('temp:21.5,hum:40', kv)), ['temp=21.5|21.5', 'hum=40|40']);
  t.same(readings(parseLine('  a=1;  b=x\t c=0x1f ', kv)), ['a=1|1', 'b=x|"x"', 'c=0x1f|"0x1f"'], 'hex is text, not a number');
  t.same(readings(parseLine('url=http://x', kv)), ['url=http://x|"http://x"'], 'split at the first = or :');
  t.equal(reason(parseLine('Sensor ready', kv)), 'parse', 'a banner is not readings');
  t.equal(reason(parseLine('a=1 b=', kv)), 'parse', 'an empty value');
  t.equal(reason(parseLine('=1', kv)), 'parse', 'an empty key');
  t.same(readings(parseLine('a/b=1 +=2', kv)), ['a_b=1|1', '_=2|2'], 'keys sanitised');
  t.same(readings(parseLine('t=1 h=2', { ...kv, wholeLine: true })), ['={"t":1,"h":2}|{"t":1,"h":2}'], 'whole line as a JSON object');
  t.equal(reason(parseLine('a=1 b=2 c=3', { ...kv, maxKeys: 2 })), 'tooManyKeys');
});

t.test('csv: columns, separator, empty fields', async (t) => {
  const csv: ParseOptions = { ...base, format: 'csv', columns: ['t', 'h', 'p'] };
  t.same(readings(parseLine('21.5, 40 ,1013', csv)), ['t=21.5|21.5', 'h=40|40', 'p=1013|1013']);
  t.same(readings(parseLine('21.5;40;1013', { ...csv, separator: ';' })), ['t=21.5|21.5', 'h=40|40', 'p=1013|1013']);
  t.same(readings(parseLine('21.5,,1013', csv)), ['t=21.5|21.5', 'p=1013|1013'], 'an empty field is skipped');
  t.equal(reason(parseLine('1,2', csv)), 'parse', 'too few fields');
  t.equal(reason(parseLine('1,2,3,4', csv)), 'parse', 'too many fields');
  t.equal(reason(parseLine(',,', csv)), 'parse', 'all empty');
  t.same(readings(parseLine('1,x,3', { ...csv, wholeLine: true })), ['={"t":1,"h":"x","p":3}|{"t":1,"h":"x","p":3}']);
});

t.test('raw: the line as is', async (t) => {
  t.same(readings(parseLine('  anything "at" all ', { ...base, format: 'raw' })), ['=  anything "at" all |"  anything \\"at\\" all "']);
});

t.test('binary detection', async (t) => {
  t.equal(hasBinary(Buffer.from('a\tb=1 ünï')), false, 'TAB and UTF-8 are text');
  t.equal(hasBinary(Buffer.from([0x61, 0x00, 0x62])), true, 'NUL');
  t.equal(hasBinary(Buffer.from([0x61, 0x1b, 0x5b])), true, 'ESC');
  t.equal(hasBinary(Buffer.from([0x7f])), true, 'DEL');
});

t.test('key sanitising: no wildcard, separator, NUL, control, $ or empty level; bounded', async (t) => {
  t.equal(sanitiseKeySegment('a/#'), 'a__');
  t.equal(sanitiseKeySegment('+'), '_');
  t.equal(sanitiseKeySegment(''), '_');
  t.equal(sanitiseKeySegment('$SYS'), '_SYS');
  t.equal(sanitiseKeySegment('a$b'), 'a$b', "'$' inside a level is harmless");
  t.equal(sanitiseKeySegment('x\u0000y\u0007z\u0085'), 'x_y_z_');
  t.equal(sanitiseKeySegment('\ud800'), '_', 'a lone surrogate');
  t.equal(sanitiseKeySegment('\uffff'), '_', 'a non-character');
  t.equal(sanitiseKeySegment('température'), 'température', 'UTF-8 is fine');
  t.equal(sanitiseKeySegment('😀'.repeat(100)), '😀'.repeat(MAX_KEY_SEGMENT), 'truncated by code points, never inside a pair');
  t.equal(sanitiseKeySegment('k'.repeat(1000)).length, MAX_KEY_SEGMENT);
});

t.test('topic templates', async (t) => {
  const perKey = { allowKey: true, needsKey: true };
  const whole = { allowKey: false, needsKey: false };
  t.equal(templateError('sensors/{name}/{key}', perKey), null);
  t.equal(templateError('a/{key}/state', perKey), null);
  t.equal(templateError('home/{name}', whole), null);
  t.match(templateError('sensors/{name}', perKey), /must contain \{key\}/);
  t.match(templateError('sensors/{key}', whole), /not allowed/);
  t.match(templateError('s/{key}/{key}', perKey), /only once/);
  t.match(templateError('s/{nmae}/{key}', perKey), /unknown placeholder \{nmae\}/);
  t.match(templateError('s/{name/{key}', perKey), /unbalanced|unknown placeholder/);
  t.match(templateError('s/+/{key}', perKey), /wildcards/);
  t.match(templateError('s/#', whole), /wildcards/);
  t.match(templateError('/s/{key}', perKey), /empty topic level/);
  t.match(templateError('s//{key}', perKey), /empty topic level/);
  t.match(templateError('s/{key}/', perKey), /empty topic level/);
  t.match(templateError('$SYS/{key}', perKey), /reserved/);
  t.match(templateError('', whole), /empty topic/);
  t.match(templateError('a\u0000b', whole), /NUL/);
  const c = compileTemplate('farm/{name}/{key}/state', 'gh');
  t.equal(renderTopic(c, 'soil/moisture'), 'farm/gh/soil/moisture/state');
  t.equal(renderTopic(compileTemplate('sensors/{name}', 'gps'), ''), 'sensors/gps');
});

t.test('back-off: exponential, capped, jittered within ±20 %', async (t) => {
  const mid = () => 0.5;
  t.same([0, 1, 2, 3, 4, 5, 6].map((n) => backoffDelay(n, 250, 5000, mid)), [250, 500, 1000, 2000, 4000, 5000, 5000]);
  t.equal(backoffDelay(1000, 250, 5000, mid), 5000, 'a huge attempt count stays finite and capped');
  t.equal(backoffDelay(0, 250, 5000, () => 0), 200, '-20 %');
  t.equal(backoffDelay(0, 250, 5000, () => 0.999999), 300, '+20 %');
  t.equal(backoffDelay(10, 250, 5000, () => 0.999999), 5000, 'jitter never exceeds the cap');
  t.equal(backoffDelay(10, 250, 5000, () => 0), 4000, 'at the cap, jitter still spreads retries');
});

t.test('bounded queue: FIFO, drops the oldest when full', async (t) => {
  const q = new BoundedQueue<number>(3);
  t.equal(q.push(1), undefined);
  q.push(2);
  q.push(3);
  t.equal(q.push(4), 1, 'the oldest is evicted and returned');
  t.same([q.shift(), q.shift(), q.shift(), q.shift()], [2, 3, 4, undefined]);
  for (let i = 0; i < 10; i++) q.push(i);
  t.equal(q.length, 3);
  q.clear();
  t.equal(q.length, 0);
  const none = new BoundedQueue<number>(0);
  t.equal(none.push(7), 7, 'capacity 0 keeps nothing');
  t.equal(none.length, 0);
});
