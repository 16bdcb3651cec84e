import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { MAX_FILTER_LEVELS, TopicIndex, TopicSet, topicMatches } from './topic-filter.ts';

/** [filter, topic, matches] — MQTT 3.1.1 §4.7 and 5.0 §4.7, including their own examples. */
const TABLE: [string, string, boolean][] = [
  // exact
  ['a/b', 'a/b', true],
  ['a/b', 'a/b/c', false],
  ['a/b/c', 'a/b', false],
  ['a/b', 'a/B', false],
  // + : exactly one level, which may be empty
  ['meters/+/kwh', 'meters/m1/kwh', true],
  ['meters/+/kwh', 'meters/m1/x/kwh', false],
  ['sport/tennis/+', 'sport/tennis/player1', true],
  ['sport/tennis/+', 'sport/tennis/player1/ranking', false],
  ['sport/+', 'sport', false],
  ['sport/+', 'sport/', true],
  ['a/+/b', 'a//b', true],
  ['+/+', '/finance', true],
  ['/+', '/finance', true],
  ['+', '/finance', false],
  ['+', 'a', true],
  // # : this level and everything below, including the parent level itself
  ['sport/#', 'sport', true],
  ['sport/#', 'sport/', true],
  ['sport/#', 'sport/tennis/player1/ranking', true],
  ['sport/tennis/#', 'sport/tennis', true],
  ['sport/tennis/#', 'sport', false],
  ['sport/tennis/#', 'sports/tennis/x', false],
  ['#', 'a', true],
  ['#', 'a/b/c', true],
  ['#', '/', true],
  ['+/#', 'a', true],
  ['+/tennis/#', 'sport/tennis', true],
  // $ topics: a filter starting with a wildcard does not match them; one naming the $ level does
  ['#', '$SYS/x', false],
  ['+/monitor/Clients', '$SYS/monitor/Clients', false],
  ['+', '$SYS', false],
  ['+/#', '$SYS/x', false],
  ['$SYS/#', '$SYS/x', true],
  ['$SYS/#', '$SYS', true],
  ['$SYS/monitor/+', '$SYS/monitor/Clients', true],
  ['a/#', 'a/$b', true],
  ['a/+', 'a/$b', true],
];

describe('MQTT topic filters (qlobber)', () => {
  for (const [filter, topic, want] of TABLE) {
    it(`${filter} ${want ? 'matches' : 'does not match'} ${JSON.stringify(topic)}`, () => {
      assert.equal(topicMatches(filter, topic), want, 'topicMatches');
      assert.equal(new TopicSet([filter]).test(topic), want, 'TopicSet');
      const ix = new TopicIndex<string>();
      ix.add(filter, 'v');
      assert.deepEqual([...ix.match(topic)], want ? ['v'] : [], 'TopicIndex');
    });
  }

  it('an index gives the values of every matching filter once, and forgets removed ones', () => {
    const ix = new TopicIndex<string>();
    ix.add('factory/+/vibration', 'rms');
    ix.add('factory/#', 'all');
    ix.add('#', 'everything');
    ix.add('factory/m1/vibration', 'm1');
    ix.add('factory/m1/vibration', 'm1'); // twice: still one value
    ix.add('other/#', 'other');
    assert.deepEqual([...ix.match('factory/m1/vibration')].sort(), ['all', 'everything', 'm1', 'rms']);
    assert.deepEqual([...ix.match('$SYS/factory')].sort(), []);
    ix.remove('factory/#', 'all');
    ix.remove('#', 'everything');
    assert.deepEqual([...ix.match('factory/m1/vibration')].sort(), ['m1', 'rms']);
  });

  it('a set matches when any of its filters does; an empty set matches nothing', () => {
    const s = new TopicSet(['a/+', 'b/#']);
    assert.deepEqual(
      ['a/x', 'b', 'b/c/d', 'c', 'a/x/y'].map((t) => s.test(t)),
      [true, true, true, false, false],
    );
    assert.equal(new TopicSet([]).test('a'), false);
  });

  it("deep topics and filters (past qlobber's default of 100 levels) match instead of throwing", () => {
    const deep = Array.from({ length: MAX_FILTER_LEVELS }, (_, i) => `l${i}`).join('/');
    assert.equal(topicMatches('#', deep), true);
    assert.equal(topicMatches('l0/#', deep), true);
    assert.equal(topicMatches(deep, deep), true);
    assert.equal(topicMatches(deep, `${deep}/x`), false);
  });

  it(`a filter deeper than ${MAX_FILTER_LEVELS} levels is refused when added, with the bound, instead of overflowing the stack when matched`, () => {
    const tooDeep = Array.from({ length: MAX_FILTER_LEVELS + 1 }, () => 'a').join('/');
    const longest = Array.from({ length: MAX_FILTER_LEVELS }, () => 'a').join('/');
    assert.throws(() => new TopicIndex<string>().add(tooDeep, 'v'), /topic filter has 1001 levels; at most 1000/);
    assert.throws(() => new TopicSet([tooDeep]), /at most 1000/);
    assert.equal(topicMatches(longest, longest), true);
    assert.equal(topicMatches(`${longest.slice(2)}/#`, Array.from({ length: 40_000 }, () => 'a').join('/')), true);
  });
});
