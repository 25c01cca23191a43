/**
 * The ACL (adapters/auth/acl.ts): Mosquitto's acl_file syntax and Mosquitto 2.0's decisions for
 * read and write, and edgeway's subscription check (refused only when nothing could ever be
 * delivered, or when a deny rule covers the whole filter).
 */
import t from 'tap';
import { Acl, filterCovers, filtersIntersect, type AclClient } from '../../adapters/auth';

function acl(text: string): Acl {
  const parsed = Acl.parse(text, 'acl');
  if (parsed.problems.length > 0) throw new Error(parsed.problems.join('\n'));
  return parsed.acl;
}

const alice: AclClient = { clientId: 'alice-phone', username: 'alice' };
const bob: AclClient = { clientId: 'bob-1', username: 'bob' };
const anonymous: AclClient = { clientId: 'anon-1', username: undefined };

// The example of mosquitto.conf(5) and the shipped aclfile.example, written the Mosquitto way.
const MOSQUITTO_FILE = `# This affects access control for clients with no username.
topic read $SYS/#

# This only affects clients with username "roger".
user roger
topic foo/bar

# This affects all clients.
pattern write $SYS/broker/connection/%c/state
`;

t.test('a Mosquitto ACL file is read as it is', async (t) => {
  const parsed = Acl.parse(MOSQUITTO_FILE, 'aclfile.example');
  t.same(parsed.problems, []);
  const roger: AclClient = { clientId: 'r', username: 'roger' };
  t.ok(parsed.acl.allows(roger, 'foo/bar', 'write'), 'a topic line without access is readwrite');
  t.ok(parsed.acl.allows(roger, 'foo/bar', 'read'));
  t.notOk(parsed.acl.allows(roger, 'foo/baz', 'read'), 'nothing else');
  t.ok(parsed.acl.allows(anonymous, '$SYS/broker/uptime', 'read'), 'lines before any user line are the anonymous rules');
  t.notOk(parsed.acl.allows(roger, '$SYS/broker/uptime', 'read'), "a user's block replaces the anonymous rules");
  t.ok(parsed.acl.allows(anonymous, '$SYS/broker/connection/anon-1/state', 'write'), "a bridge's state topic, through the pattern");
  t.notOk(parsed.acl.allows(anonymous, '$SYS/broker/connection/other/state', 'write'), "another client's");
});

t.test('read, write, readwrite and deny', async (t) => {
  const a = acl(`user alice
topic read in/#
topic write out/#
topic readwrite both/#
topic readwrite shared/#
topic deny shared/secret
`);
  t.ok(a.allows(alice, 'in/x', 'read'));
  t.notOk(a.allows(alice, 'in/x', 'write'));
  t.ok(a.allows(alice, 'out/x', 'write'));
  t.notOk(a.allows(alice, 'out/x', 'read'));
  t.ok(a.allows(alice, 'both/x', 'read'));
  t.ok(a.allows(alice, 'both/x', 'write'));
  t.ok(a.allows(alice, 'shared/open', 'read'));
  t.notOk(a.allows(alice, 'shared/secret', 'read'), 'deny wins although a readwrite rule before it matches');
  t.notOk(a.allows(alice, 'shared/secret', 'write'));
  t.notOk(a.allows(bob, 'both/x', 'read'), 'a user without a block and no patterns may do nothing');
  t.notOk(a.allows(anonymous, 'both/x', 'read'), 'no anonymous rules: anonymous may do nothing');
});

t.test('user blocks: the same user twice adds to one block; topic lines after a user line are that user’s', async (t) => {
  const a = acl(`user alice
topic read a/#
user bob
topic read b/#
user alice
topic read c/#
`);
  t.ok(a.allows(alice, 'a/1', 'read'));
  t.ok(a.allows(alice, 'c/1', 'read'));
  t.notOk(a.allows(alice, 'b/1', 'read'));
  t.ok(a.allows(bob, 'b/1', 'read'));
});

t.test('patterns with %u and %c', async (t) => {
  const a = acl(`pattern readwrite users/%u/#
pattern write devices/%c/up
pattern read devices/%c/down/%u
`);
  t.ok(a.allows(alice, 'users/alice/x', 'write'));
  t.notOk(a.allows(alice, 'users/bob/x', 'read'), "another user's subtree");
  t.ok(a.allows(alice, 'devices/alice-phone/up', 'write'));
  t.notOk(a.allows(alice, 'devices/bob-1/up', 'write'));
  t.ok(a.allows(alice, 'devices/alice-phone/down/alice', 'read'), '%c and %u in one pattern');
  t.notOk(a.allows(anonymous, 'users/undefined/x', 'read'), 'a pattern with %u does not apply to anonymous clients');
  t.ok(a.allows(anonymous, 'devices/anon-1/up', 'write'), 'one with %c only does');
  // Mosquitto 2: a '+' or '#' in the user name or client id refuses every pattern.
  t.notOk(a.allows({ clientId: 'x', username: '#' }, 'users/#/x', 'write'));
  t.notOk(a.allows({ clientId: '+', username: 'carol' }, 'users/carol/x', 'write'), 'even a pattern that does not use %c');
  // A '/' could reach into another subtree: a pattern using that name does not match.
  t.notOk(a.allows({ clientId: 'x', username: 'alice/x' }, 'users/alice/x/y', 'write'));
  t.ok(a.allows({ clientId: 'a/b', username: 'dave' }, 'users/dave/y', 'write'), 'a pattern not using the name with a / still applies');
});

t.test("a user's own rules come before the patterns; a deny pattern cannot take back what they allow", async (t) => {
  const a = acl(`user alice
topic read x/#
pattern deny x/%u
pattern read y/%u
`);
  t.ok(a.allows(alice, 'x/alice', 'read'), 'own rule allows first (Mosquitto order)');
  t.notOk(a.allows(bob, 'x/bob', 'read'));
  t.ok(a.allows(alice, 'y/alice', 'read'));
});

t.test('$ topics are matched only by filters starting with $', async (t) => {
  const a = acl(`user alice
topic read #
topic read +/status
`);
  t.ok(a.allows(alice, 'any/thing', 'read'));
  t.notOk(a.allows(alice, '$SYS/broker/uptime', 'read'), '# does not cover $SYS');
  t.notOk(a.allows(alice, '$aws/status', 'read'), '+ at the first level does not match a $ level');
  const b = acl(`user alice
topic readwrite $SYS/#
`);
  t.ok(b.allows(alice, '$SYS/broker/uptime', 'read'));
  t.notOk(b.allows(alice, '$SYS/broker/uptime', 'write'), 'no client writes to $SYS, whatever the rules');
});

t.test('syntax: the access is optional, the filter is the rest of the line, problems name file and line', async (t) => {
  const a = acl(`  # indented comment
user alice
topic   read    spaced/topic name
topic read
`);
  t.ok(a.allows(alice, 'spaced/topic name', 'read'), 'a filter may contain spaces (rest of the line)');
  t.ok(a.allows(alice, 'read', 'write'), '"topic read" alone is the topic "read" with readwrite (as Mosquitto parses it)');

  const parsed = Acl.parse(`user alice
topic reed a/b
topic read a/#/b
toppic read x
user
pattern
`, '/etc/edgeway/acl');
  t.same(parsed.problems, [
    '/etc/edgeway/acl:2: access must be read, write, readwrite or deny, not "reed"',
    "/etc/edgeway/acl:3: invalid topic filter \"a/#/b\": '#' must be a whole level and the last one",
    '/etc/edgeway/acl:4: expected "topic", "pattern" or "user", found "toppic"',
    '/etc/edgeway/acl:5: user without a name',
    '/etc/edgeway/acl:6: pattern without a topic filter',
  ]);
  t.same(Acl.parse('user alice\r\ntopic read a/#\r\n', 'crlf').problems, [], 'CRLF line ends are accepted');
});

t.test('subscriptions: refused when nothing could be delivered or a deny covers the whole filter', async (t) => {
  const a = acl(`user alice
topic read sensors/#
topic deny sensors/secret/#
topic write commands/#
pattern read users/%u/#
`);
  t.ok(a.allowsSubscription(alice, 'sensors/#'));
  t.ok(a.allowsSubscription(alice, '#'), '# shares topics with a read rule: granted, filtered per delivery');
  t.ok(a.allowsSubscription(alice, '+/temp'));
  t.ok(a.allowsSubscription(alice, 'users/alice/inbox'), 'through the pattern');
  t.ok(a.allowsSubscription(alice, '$share/g/sensors/x'), 'a shared subscription is checked by its filter');
  t.notOk(a.allowsSubscription(alice, 'commands/#'), 'write only: nothing to read');
  t.notOk(a.allowsSubscription(alice, 'other/topic'), 'no read rule shares a topic with it');
  t.notOk(a.allowsSubscription(alice, 'sensors/secret/#'), 'a deny rule covers all of it');
  t.notOk(a.allowsSubscription(alice, 'sensors/secret/a/+'));
  t.notOk(a.allowsSubscription(alice, '$SYS/#'), '$SYS is not under #-style rules');
  t.notOk(a.allowsSubscription(alice, 'users/bob/#'));
  t.notOk(a.allowsSubscription(bob, 'sensors/#'), 'no rules for bob');
});

t.test('filter algebra: intersect and cover', async (t) => {
  const intersect: [string, string, boolean][] = [
    ['a/b', 'a/b', true],
    ['a/b', 'a/c', false],
    ['a/+', 'a/b', true],
    ['a/#', 'a', true],
    ['a', 'a/#', true],
    ['a/+', 'a', false],
    ['#', 'x/y/z', true],
    ['+/+', 'a/#', true],
    ['a/b/c', 'a/+', false],
    ['#', '$SYS/x', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/broker/+', true],
    ['+', '#', true],
  ];
  for (const [x, y, expected] of intersect) {
    t.equal(filtersIntersect(x, y), expected, `${x} ∩ ${y}`);
    t.equal(filtersIntersect(y, x), expected, `${y} ∩ ${x} (symmetric)`);
  }
  const cover: [string, string, boolean][] = [
    ['#', 'a/b', true],
    ['#', '#', true],
    ['a/#', 'a', true],
    ['a/#', 'a/+/c', true],
    ['a/+', 'a/b', true],
    ['a/+', 'a/+', true],
    ['a/+', 'a/#', false],
    ['a/b', 'a/+', false],
    ['a/+', 'a/b/c', false],
    ['a', 'a/#', false],
    ['#', '$SYS/#', false],
    ['+/x', '$SYS/x', false],
    ['$SYS/#', '$SYS/broker/+', true],
  ];
  for (const [outer, inner, expected] of cover) t.equal(filterCovers(outer, inner), expected, `${outer} covers ${inner}`);
});
