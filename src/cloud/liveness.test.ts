import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { LivenessTracker } from './liveness.ts';
import { ManualClock } from '../lib/clock.ts';

describe('LivenessTracker (manual clock)', () => {
  it('goes online on the first heartbeat and offline after the missed-beat budget', () => {
    const clock = new ManualClock(0);
    const t = new LivenessTracker(clock, 3);
    assert.deepEqual(t.heartbeat('s1', 10_000, 'b1'), { siteId: 's1', online: true, at: 0, reason: 'heartbeat' });
    assert.equal(t.heartbeat('s1', 10_000, 'b1'), undefined, 'no event while already online');
    clock.advance(30_000);
    assert.deepEqual(t.sweep(), [], 'exactly 3 intervals is still within budget');
    clock.advance(1);
    assert.deepEqual(
      t.sweep().map((e) => [e.siteId, e.online, e.reason]),
      [['s1', false, 'missed 3 heartbeats']],
    );
    assert.deepEqual(t.sweep(), [], 'offline is reported once');
    assert.equal(t.heartbeat('s1', 10_000, 'b1')?.online, true, 'back online');
  });

  it('after a cloud restart a site is unknown until heard from: a heartbeat makes it online, a spent budget offline', () => {
    const clock = new ManualClock(1000);
    const t = new LivenessTracker(clock, 3);
    t.seedUnknown('back', 10_000, 'b1');
    t.seedUnknown('gone', 10_000, 'b2');
    assert.equal(t.state('back'), 'unknown');
    assert.equal(t.isOnline('back'), false, 'not online from the store alone');
    assert.equal(t.onlineCount(), 0);
    clock.advance(5000);
    assert.deepEqual(t.heartbeat('back', 10_000, 'b3'), { siteId: 'back', online: true, at: 6000, reason: 'heartbeat' });
    assert.equal(t.state('back'), 'online');
    clock.advance(25_000);
    assert.deepEqual(t.sweep(), [], 'the budget runs from the restart');
    assert.equal(t.state('gone'), 'unknown');
    clock.advance(1);
    assert.deepEqual(
      t.sweep().map((e) => [e.siteId, e.online]),
      [['gone', false]],
    );
    assert.equal(t.state('gone'), 'offline');
    assert.equal(t.state('never-seen'), 'offline');
  });

  it('an unknown site whose last will arrives (same boot) is offline at once', () => {
    const t = new LivenessTracker(new ManualClock(0), 3);
    t.seedUnknown('s', 10_000, 'b1');
    assert.equal(t.offline('s', 'old-boot', 'connection lost'), undefined, 'a will from another boot is ignored');
    assert.equal(t.offline('s', 'b1', 'connection lost')?.online, false);
    assert.equal(t.state('s'), 'offline');
  });

  it("uses each site's own interval", () => {
    const clock = new ManualClock(0);
    const t = new LivenessTracker(clock, 2);
    t.heartbeat('fast', 1000, 'a');
    t.heartbeat('slow', 60_000, 'b');
    clock.advance(5000);
    assert.deepEqual(
      t.sweep().map((e) => e.siteId),
      ['fast'],
    );
    assert.equal(t.isOnline('slow'), true);
    assert.equal(t.onlineCount(), 1);
  });

  it('takes the last will of the current boot only', () => {
    const clock = new ManualClock(0);
    const t = new LivenessTracker(clock, 3);
    t.heartbeat('s1', 1000, 'boot-2');
    assert.equal(t.offline('s1', 'boot-1', 'connection lost'), undefined, 'a stale will from the previous boot');
    assert.equal(t.isOnline('s1'), true);
    assert.equal(t.offline('s1', 'boot-2', 'connection lost')?.online, false);
    assert.equal(t.offline('s1', 'boot-2', 'again'), undefined);
  });

  it('forgets a revoked site', () => {
    const clock = new ManualClock(0);
    const t = new LivenessTracker(clock, 1);
    t.heartbeat('s1', 1000, 'b');
    t.forget('s1');
    clock.advance(10_000);
    assert.deepEqual(t.sweep(), []);
    assert.throws(() => new LivenessTracker(clock, 0), RangeError);
  });
});
