// The incremental order against a full sort of the same keys: rooms moved one at a time, added,
// removed and refreshed in random sequences always leave the order a full sort would give.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { SortedRooms, type SortKey } from '../../../src/cache/sorted-rooms.js';

/** A small deterministic generator (the sequences are reproducible from the seed). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

function fullSort(keys: Map<string, SortKey>): string[] {
  const cmp = (a: SortKey, b: SortKey) => {
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      const x = a[i];
      const y = b[i];
      if (x === y) continue;
      if (x === undefined) return -1;
      if (y === undefined) return 1;
      return x < y ? -1 : 1;
    }
    return 0;
  };
  return [...keys.keys()].sort((a, b) => cmp(keys.get(a) as SortKey, keys.get(b) as SortKey) || (a < b ? -1 : a > b ? 1 : 0));
}

describe('SortedRooms', () => {
  for (const [shape, keyLength] of [
    ['one-number keys', 1],
    ['tuple keys', 2],
  ] as const) {
    it(`keeps the order a full sort gives through random moves (${shape})`, () => {
      for (let seed = 1; seed <= 20; seed++) {
        const next = rng(seed);
        const keys = new Map<string, SortKey>();
        const keyOf = (id: string) => keys.get(id);
        const sorted = new SortedRooms(keyOf);
        const ids = Array.from({ length: 30 }, (_, i) => `!r${i}`);
        // Few distinct values, so ties (broken by room id) are common.
        const randomKey = (): SortKey => Array.from({ length: keyLength }, () => -Math.floor(next() * 8));
        for (const id of ids.slice(0, 10)) keys.set(id, randomKey());
        sorted.refresh([...keys.keys()]);
        assert.deepEqual([...sorted.order], fullSort(keys));
        for (let step = 0; step < 300; step++) {
          const id = ids[Math.floor(next() * ids.length)] as string;
          const r = next();
          if (r < 0.2) keys.delete(id);
          else keys.set(id, randomKey());
          if (r > 0.95) sorted.refresh([...keys.keys()]);
          else sorted.update(id);
          assert.deepEqual([...sorted.order], fullSort(keys), `seed ${seed}, step ${step}`);
        }
      }
    });
  }
});
