// The signal of one upstream request: its time budget, the caller's abort, and nothing held
// once the request is over.
import assert from 'node:assert/strict';
import { getEventListeners } from 'node:events';
import { describe, it } from 'node:test';
import { startDeadline } from '../../../src/upstream/deadline.js';

describe('startDeadline', () => {
  it('aborts with a TimeoutError when the budget runs out, and says it timed out', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const caller = new AbortController();
    const deadline = startDeadline(1_000, caller.signal);
    t.mock.timers.tick(999);
    assert.equal(deadline.signal.aborted, false);
    t.mock.timers.tick(1);
    assert.equal(deadline.signal.aborted, true);
    assert.equal((deadline.signal.reason as DOMException).name, 'TimeoutError');
    assert.equal(deadline.timedOut, true);
    assert.equal(caller.signal.aborted, false, 'the caller is not aborted by the budget');
  });

  it("aborts with the caller's reason when the caller aborts, which is not a timeout", (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const caller = new AbortController();
    const deadline = startDeadline(1_000, caller.signal);
    const reason = new Error('client disconnected');
    caller.abort(reason);
    assert.equal(deadline.signal.reason, reason);
    t.mock.timers.tick(1_000);
    assert.equal(deadline.timedOut, false);
  });

  it('starts aborted when the caller already is', () => {
    const caller = new AbortController();
    caller.abort(new Error('shutting down'));
    const deadline = startDeadline(1_000, caller.signal);
    assert.equal(deadline.signal.aborted, true);
    assert.equal((deadline.signal.reason as Error).message, 'shutting down');
    deadline.release();
  });

  it("once released, holds nothing: no listener on the caller's signal and no timer left to fire", (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    // A poller's signal lives as long as the poller: each request it makes must take its listener back.
    const caller = new AbortController();
    const deadlines = Array.from({ length: 3 }, () => startDeadline(1_000, caller.signal));
    assert.equal(getEventListeners(caller.signal, 'abort').length, 3);
    for (const d of deadlines) d.release();
    assert.equal(getEventListeners(caller.signal, 'abort').length, 0);
    t.mock.timers.tick(1_000);
    assert.ok(
      deadlines.every((d) => !d.signal.aborted && !d.timedOut),
      'the budget timers were cleared',
    );
    caller.abort();
    assert.ok(
      deadlines.every((d) => !d.signal.aborted),
      'the caller no longer reaches released requests',
    );
  });

  it('works without a caller signal', (t) => {
    t.mock.timers.enable({ apis: ['setTimeout'] });
    const deadline = startDeadline(10);
    t.mock.timers.tick(10);
    assert.equal(deadline.timedOut, true);
    deadline.release();
  });
});
