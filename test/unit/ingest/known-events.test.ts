import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { KnownEvents } from '../../../src/ingest/known-events.js';

const known = (nid: number) => ({ nid, inTimeline: true, gapBefore: false });

describe('known events', () => {
  it('stays within its bound (plus a sixteenth) and forgets the least recently used first', () => {
    const k = new KnownEvents(160);
    for (let i = 0; i < 160; i++) k.set(`$${i}`, known(i));
    // Touched: the oldest becomes the most recently used.
    assert.equal(k.get('$0')?.nid, 0);
    for (let i = 160; i < 1_000; i++) {
      k.set(`$${i}`, known(i));
      assert.ok(k.size <= 170, `size ${k.size} after ${i}`);
      assert.ok(k.size >= 160);
    }
    // The newest 160 are all there; the first ones set (not touched since) are gone.
    for (let i = 840; i < 1_000; i++) assert.equal(k.get(`$${i}`)?.nid, i);
    assert.equal(k.get('$1'), undefined);
    assert.equal(k.get('$500'), undefined);
  });

  it('keeps a re-set event as the newest', () => {
    const k = new KnownEvents(16);
    for (let i = 0; i < 16; i++) k.set(`$${i}`, known(i));
    k.set('$0', known(100));
    for (let i = 16; i < 31; i++) k.set(`$${i}`, known(i));
    assert.equal(k.get('$0')?.nid, 100);
    assert.equal(k.get('$1'), undefined);
  });
});
