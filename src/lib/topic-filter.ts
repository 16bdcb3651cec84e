import { createRequire } from 'node:module';

/**
 * MQTT topic-filter matching (`+` one level, `#` this level and everything below it), by qlobber's
 * trie: a topic is matched against every filter of an index in one walk over its levels, instead
 * of comparing it with each filter in turn.
 *
 * MQTT's rules kept here (MQTT 3.1.1 §4.7, 5.0 §4.7): `a/#` matches `a` itself; `+` matches an
 * empty level (`a//b`); and a filter whose first level is a wildcard does not match a topic that
 * starts with `$` (`#` does not see `$SYS/…`), while `$SYS/#` does.
 */
const require = createRequire(import.meta.url);
interface QlobberLike<T> {
  add(filter: string, v: T): void;
  remove(filter: string, v?: T): void;
  match(topic: string): Set<T>;
}
interface QlobberTrueLike {
  add(filter: string): void;
  test(topic: string): boolean;
}
type QlobberModule = { QlobberDedup: new (o: object) => QlobberLike<unknown>; QlobberTrue: new (o: object) => QlobberTrueLike };
/** Loaded at first use: the manifest imports this module for MAX_FILTER_LEVELS alone, and the CLI loads the manifest. */
let qlobber: QlobberModule | undefined;
const lib = (): QlobberModule => (qlobber ??= require('qlobber') as QlobberModule);

/**
 * An MQTT topic is at most 65,535 bytes, so it has at most 65,536 levels: qlobber's own limit
 * (100 levels by default, past which it throws) is raised to that, so no topic makes a match
 * throw. A match recurses as deep as the filters added, not as deep as the topic, so filters are
 * bounded instead (MAX_FILTER_LEVELS; the manifest and device grants are checked against it).
 */
const OPTIONS = { separator: '/', wildcard_one: '+', wildcard_some: '#', match_empty_levels: true, max_words: 65_536 };

/** Most levels a topic filter may have (deeper ones are refused when added: matching recurses per level). */
export const MAX_FILTER_LEVELS = 1000;

/** Throws when a filter cannot be indexed; callers validate input against the same bound first. */
function checkFilter(filter: string): void {
  let levels = 1;
  for (let i = 0; i < filter.length; i++) if (filter.charCodeAt(i) === 47) levels++;
  if (levels > MAX_FILTER_LEVELS) throw new RangeError(`topic filter has ${levels} levels; at most ${MAX_FILTER_LEVELS}`);
}

/** Whether a filter starts with a wildcard level (such filters never match `$` topics). */
const wildFirst = (filter: string): boolean => filter === '#' || filter === '+' || filter.startsWith('+/') || filter.startsWith('#/');
const isDollar = (topic: string): boolean => topic.startsWith('$');

/** Topic filters, each with values: `match(topic)` gives the values of every filter that matches. */
export class TopicIndex<T> {
  /** Two tries: filters starting with a wildcard are left out of `$` topics' matches. */
  private readonly plain = new (lib().QlobberDedup)(OPTIONS) as QlobberLike<T>;
  private readonly wild = new (lib().QlobberDedup)(OPTIONS) as QlobberLike<T>;

  add(filter: string, value: T): void {
    checkFilter(filter);
    (wildFirst(filter) ? this.wild : this.plain).add(filter, value);
  }

  remove(filter: string, value: T): void {
    (wildFirst(filter) ? this.wild : this.plain).remove(filter, value);
  }

  match(topic: string): Set<T> {
    const hits = this.plain.match(topic);
    if (isDollar(topic)) return hits;
    for (const v of this.wild.match(topic)) hits.add(v);
    return hits;
  }
}

/** A set of topic filters compiled once, for repeated checks (a device's grants, a stream's filter). */
export class TopicSet {
  private readonly plain = new (lib().QlobberTrue)(OPTIONS);
  private readonly wild = new (lib().QlobberTrue)(OPTIONS);

  constructor(filters: readonly string[]) {
    for (const f of filters) {
      checkFilter(f);
      (wildFirst(f) ? this.wild : this.plain).add(f);
    }
  }

  /** Whether any of the filters matches the topic. */
  test(topic: string): boolean {
    return this.plain.test(topic) || (!isDollar(topic) && this.wild.test(topic));
  }
}

/** One filter against one topic. Compiles the filter each call: for repeated checks use a TopicSet. */
export function topicMatches(filter: string, topic: string): boolean {
  return new TopicSet([filter]).test(topic);
}
