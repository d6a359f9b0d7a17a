import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WeightedLru } from '../../../src/cache/weighted-lru.js';

describe('WeightedLru', () => {
  it('drops the least recently used entries once their weights together exceed the budget', () => {
    const lru = new WeightedLru<string, number>(10);
    lru.set('a', 1, 4);
    lru.set('b', 2, 4);
    assert.equal(lru.get('a'), 1, 'a is now the most recently used');
    lru.set('c', 3, 4);
    assert.equal(lru.get('b'), undefined, 'b was the least recently used');
    assert.equal(lru.get('a'), 1);
    assert.equal(lru.get('c'), 3);
    assert.equal(lru.weight, 8);
    lru.set('d', 4, 10);
    assert.deepEqual([lru.size, lru.weight, lru.get('d')], [1, 10, 4], 'one entry of the whole budget pushes out every other');
  });

  it('holds nothing heavier than the whole budget, and keeps what it held', () => {
    const lru = new WeightedLru<string, number>(10);
    lru.set('a', 1, 5);
    assert.equal(lru.fits(11), false);
    assert.equal(lru.set('big', 2, 11), false);
    assert.equal(lru.get('big'), undefined);
    assert.deepEqual([lru.size, lru.weight, lru.get('a')], [1, 5, 1]);
  });

  it('bounds the number of entries too, and replacing or deleting an entry gives its weight back', () => {
    const lru = new WeightedLru<string, string>(100, 2);
    lru.set('a', 'a', 1);
    lru.set('b', 'b', 1);
    lru.set('c', 'c', 1);
    assert.deepEqual([lru.size, lru.get('a')], [2, undefined]);
    lru.set('b', 'b2', 50);
    assert.equal(lru.weight, 51);
    assert.equal(lru.holds('b', 'b2'), true);
    assert.equal(lru.holds('b', 'b'), false, 'a replaced value is no longer held');
    lru.delete('b');
    assert.deepEqual([lru.size, lru.weight], [1, 1]);
  });
});
