import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Queryable } from '../../../src/store/db.js';
import { plannerStatistics } from '../../../src/store/planner-statistics.js';
import { testLogger } from '../../support/db.js';

/** A database whose events table the planner counts as `size`, recording each ANALYZE. */
function fakeDb(size: { n: number }) {
  const analysed: number[] = [];
  const db = {
    query: async (text: string) => {
      if (text === 'ANALYZE') {
        analysed.push(size.n);
        return { rows: [] };
      }
      return { rows: [{ n: String(size.n) }] };
    },
  } as unknown as Queryable;
  return { db, analysed };
}

describe('planner statistics', () => {
  it('analyses once the new events reach the minimum and the share of the table, then counts afresh', async () => {
    const size = { n: 10_000 };
    const { db, analysed } = fakeDb(size);
    const stats = plannerStatistics(db, testLogger, { minRows: 100, growth: 0.2, minIntervalMs: 0 });
    await stats.idle();
    stats.stored(1_999);
    await stats.idle();
    assert.deepEqual(analysed, [], '1,999 new events are under 20% of 10,000');
    size.n = 12_000;
    stats.stored(1);
    await stats.idle();
    assert.deepEqual(analysed, [12_000]);
    stats.stored(2_000);
    await stats.idle();
    assert.deepEqual(analysed, [12_000], 'the share is of the table as analysed: 20% of 12,000');
    stats.stored(400);
    await stats.idle();
    assert.equal(analysed.length, 2);
  });

  it('analyses a new (empty) table after the minimum, and at most once per interval', async () => {
    const { db, analysed } = fakeDb({ n: 0 });
    let now = 0;
    const stats = plannerStatistics(db, testLogger, { minRows: 1_000, growth: 0.2, minIntervalMs: 5_000 }, () => now);
    await stats.idle();
    stats.stored(999);
    await stats.idle();
    assert.equal(analysed.length, 0);
    stats.stored(1);
    await stats.idle();
    assert.equal(analysed.length, 1);
    now = 4_999;
    stats.stored(5_000);
    await stats.idle();
    assert.equal(analysed.length, 1, 'within the interval');
    now = 5_000;
    stats.stored(1);
    await stats.idle();
    assert.equal(analysed.length, 2, 'the events stored meanwhile count once the interval is over');
  });

  it('decides nothing before the table size is read, and survives a failing ANALYZE', async () => {
    let release: () => void = () => undefined;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    let analyses = 0;
    const db = {
      query: async (text: string) => {
        if (text === 'ANALYZE') {
          analyses++;
          throw new Error('canceled');
        }
        await gate;
        return { rows: [{ n: '0' }] };
      },
    } as unknown as Queryable;
    const stats = plannerStatistics(db, testLogger, { minRows: 10, growth: 0.2, minIntervalMs: 0 });
    stats.stored(50);
    assert.equal(analyses, 0, 'the size is not known yet');
    release();
    await stats.idle();
    stats.stored(1);
    await stats.idle();
    assert.equal(analyses, 1);
    stats.stored(1);
    await stats.idle();
    assert.equal(analyses, 2, 'the failed one left its events counted');
  });
});
