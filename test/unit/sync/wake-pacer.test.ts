// Wakes are let go a few per turn of the event loop, in order, each batch with its microtasks
// run before the next turn.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WakePacer } from '../../../src/sync/wake-pacer.js';

const turn = () => new Promise<void>((r) => setImmediate(r));

describe('WakePacer', () => {
  it('runs at most perTurn wakes per turn, in order, with their microtasks before the next batch', async () => {
    const pacer = new WakePacer(4);
    const log: string[] = [];
    for (let i = 0; i < 10; i++) pacer.defer(() => void Promise.resolve().then(() => log.push(`w${i}`)));
    assert.equal(log.length, 0, 'nothing runs synchronously');
    await turn();
    assert.deepEqual(log, ['w0', 'w1', 'w2', 'w3']);
    await turn();
    assert.equal(log.length, 8);
    await turn();
    assert.deepEqual(
      log,
      Array.from({ length: 10 }, (_, i) => `w${i}`),
    );
    pacer.defer(() => log.push('later'));
    await turn();
    assert.equal(log.at(-1), 'later', 'an idle pacer starts again');
  });
});
