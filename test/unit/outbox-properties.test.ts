/**
 * checkedOutboxProperties: MQTT 5 properties in the outbox's JSON shape read back from outside the
 * process (another gateway of a cluster): what outboxProperties wrote comes back as it was; anything
 * no PUBLISH could carry is refused with the reason; names it does not know are left out.
 */
import t from 'tap';
import { checkedOutboxProperties, outboxProperties, type PublishProperties } from '../../gateway/broker';

const utf8 = Buffer.from('{"on":true}');

/** Through JSON text, as between gateways. */
function travelled(properties: PublishProperties): unknown {
  return JSON.parse(JSON.stringify(outboxProperties(properties)));
}

t.test('what outboxProperties wrote comes back as it was, without topic alias or subscription identifiers', async (t) => {
  const published: PublishProperties = {
    payloadFormatIndicator: true,
    messageExpiryInterval: 0xffff_ffff,
    contentType: 'application/json; charset=utf-8 ✓',
    responseTopic: 'resp/ü/1',
    correlationData: Buffer.from([0, 255, 128, 0]),
    userProperties: { a: ['1', '3'], 'ünïcode': '', b: '2' },
    topicAlias: 3,
    subscriptionIdentifier: 4,
  };
  const { topicAlias: _alias, subscriptionIdentifier: _ids, ...message } = published;
  t.same(checkedOutboxProperties(travelled(published), utf8), { properties: message });
  t.same(checkedOutboxProperties(travelled({ payloadFormatIndicator: false }), Buffer.from([0xff])), { properties: { payloadFormatIndicator: false } }, 'binary payload, format "unspecified"');
  t.same(checkedOutboxProperties({}, utf8), { properties: undefined }, 'nothing: no properties');
  t.same(checkedOutboxProperties({ contentType: 'a', topicAlias: 1, subscriptionIdentifier: [1, 2], later: { x: 1 } }, utf8), { properties: { contentType: 'a' } }, 'unknown names and per-connection ones left out');
});

t.test('anything no PUBLISH could carry is refused with the reason', async (t) => {
  const cases: [string, unknown, RegExp][] = [
    ['null', null, /not an object/],
    ['an array', [1], /not an object/],
    ['payloadFormatIndicator 1', { payloadFormatIndicator: 1 }, /payloadFormatIndicator/],
    ['expiry fractional', { messageExpiryInterval: 1.5 }, /messageExpiryInterval/],
    ['expiry above 2^32-1', { messageExpiryInterval: 2 ** 32 }, /messageExpiryInterval/],
    ['content type a number', { contentType: 7 }, /contentType/],
    ['content type with a lone surrogate', { contentType: 'a\ud800b' }, /contentType/],
    ['content type of 65,536 bytes', { contentType: 'x'.repeat(65_536) }, /contentType/],
    ['response topic empty', { responseTopic: '' }, /Response Topic/],
    ['response topic with #', { responseTopic: 'a/#' }, /Response Topic/],
    ['correlation data with spaces', { correlationData: 'AA AA' }, /correlationData/],
    ['correlation data of 65,536 bytes', { correlationData: Buffer.alloc(65_536).toString('base64') }, /correlationData/],
    ['user properties a list', { userProperties: [['a', 'b']] }, /userProperties/],
    ['a user property with no values', { userProperties: { a: [] } }, /userProperties/],
    ['a user property value null', { userProperties: { a: null } }, /userProperties/],
    ['a user property name with U+0000', { userProperties: { 'a\u0000': 'b' } }, /userProperties/],
  ];
  for (const [what, value, reason] of cases) {
    const read = checkedOutboxProperties(value, utf8);
    t.match('problem' in read ? read.problem : 'accepted', reason, what);
  }
  const read = checkedOutboxProperties({ payloadFormatIndicator: true }, Buffer.from([0xc3, 0x28]));
  t.match('problem' in read ? read.problem : 'accepted', /Payload Format Indicator/, 'UTF-8 announced over bytes that are not');
});
