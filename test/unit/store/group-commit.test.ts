// Group commit of pending positions: a lone write goes at once, writes arriving during a batch
// share the next one, one key never twice in a batch nor in two batches at once, a few batches
// in flight together, and a failed batch fails its own callers only.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GroupCommit } from '../../../src/store/group-commit.js';

interface Item {
  key: number;
  value: string;
}

function recorder(fail?: (items: Item[]) => boolean, maxInFlight = 1) {
  const batches: Item[][] = [];
  const gates: PromiseWithResolvers<void>[] = [];
  const commit = new GroupCommit<Item, string>(
    async (items) => {
      batches.push(items);
      const gate = Promise.withResolvers<void>();
      gates.push(gate);
      await gate.promise;
      if (fail?.(items)) throw new Error('write failed');
      return new Map(items.filter((i) => i.value !== 'gone').map((i) => [i.key, `${i.value}!`]));
    },
    3,
    maxInFlight,
  );
  const release = async () => {
    while (gates.length === 0) await new Promise((r) => setImmediate(r));
    gates.shift()?.resolve();
  };
  return { commit, batches, release };
}

describe('GroupCommit', () => {
  it('writes a lone item at once and resolves with its own result', async () => {
    const { commit, batches, release } = recorder();
    const p = commit.submit({ key: 1, value: 'a' });
    assert.equal(batches.length, 1);
    await release();
    assert.equal(await p, 'a!');
  });

  it('groups what arrives during a batch into the next one, up to the batch size, distinct keys only', async () => {
    const { commit, batches, release } = recorder();
    const first = commit.submit({ key: 1, value: 'a' });
    const rest = [
      commit.submit({ key: 2, value: 'b' }),
      commit.submit({ key: 2, value: 'b2' }),
      commit.submit({ key: 3, value: 'c' }),
      commit.submit({ key: 4, value: 'd' }),
      commit.submit({ key: 5, value: 'gone' }),
    ];
    await release();
    assert.equal(await first, 'a!');
    await release();
    await release();
    assert.deepEqual(await Promise.all(rest), ['b!', 'b2!', 'c!', 'd!', undefined]);
    assert.deepEqual(
      batches.map((b) => b.map((i) => i.value)),
      [['a'], ['b', 'c', 'd'], ['b2', 'gone']],
    );
  });

  it('rejects the callers of a failed batch and goes on with the next', async () => {
    const { commit, release } = recorder((items) => items.some((i) => i.value === 'bad'));
    const first = commit.submit({ key: 1, value: 'a' });
    const bad = commit.submit({ key: 2, value: 'bad' });
    await release();
    await release();
    await assert.rejects(bad, /write failed/);
    assert.equal(await first, 'a!');
    const later = commit.submit({ key: 3, value: 'c' });
    await release();
    assert.equal(await later, 'c!');
  });

  it('starts further batches while one is in flight, each with one turn of submissions, never a key twice at once', async () => {
    const { commit, batches, release } = recorder(undefined, 2);
    const first = commit.submit({ key: 1, value: 'a' });
    const second = [commit.submit({ key: 2, value: 'b' }), commit.submit({ key: 1, value: 'a2' }), commit.submit({ key: 3, value: 'c' })];
    assert.equal(batches.length, 1, 'the first goes at once, the others wait for the end of the turn');
    await new Promise((r) => setImmediate(r));
    // Key 1 is in flight: its second write waits for that batch, the others go now.
    assert.deepEqual(
      batches.map((b) => b.map((i) => i.value)),
      [['a'], ['b', 'c']],
    );
    const third = commit.submit({ key: 4, value: 'd' });
    await new Promise((r) => setImmediate(r));
    assert.equal(batches.length, 2, 'two in flight: the next waits for a slot');
    await release();
    assert.equal(await first, 'a!');
    assert.deepEqual(
      batches.map((b) => b.map((i) => i.value)),
      [['a'], ['b', 'c'], ['a2', 'd']],
    );
    await release();
    await release();
    assert.deepEqual(await Promise.all([...second, third]), ['b!', 'a2!', 'c!', 'd!']);
  });
});
