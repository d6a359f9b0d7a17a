import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Envelope } from '../../../src/bus/bus.js';
import { createClusterBus, MAX_PAYLOAD_BYTES, packPayloads } from '../../../src/bus/cluster-bus.js';
import { testLogger } from '../../support/db.js';

const changed = (i: number): Envelope => ({
  topic: 'room.changed',
  message: {
    roomId: `!room${i}:example.org`,
    pos: i,
    newEvents: 1,
    statePos: undefined,
    latestNid: i,
    bump: { nid: i, ts: 1_700_000_000_000 + i },
  },
});

function transport() {
  const sent: string[][] = [];
  return {
    sent,
    notifyInTransaction: async (_tx: unknown, payloads: readonly string[]) => void sent.push([...payloads]),
    notify: async (payloads: readonly string[]) => void sent.push([...payloads]),
    changesSince: async (pos: number) => ({ pos: pos + 10, messages: [changed(pos + 5)] }),
  };
}

describe('the bus across processes', () => {
  it('packs messages in order into payloads under the NOTIFY limit, each distinct', () => {
    let n = 0;
    const messages = Array.from({ length: 500 }, (_, i) => changed(i));
    const payloads = packPayloads('a', messages, () => ++n);
    assert.ok(payloads.length > 1, 'more than one payload');
    for (const p of payloads) assert.ok(Buffer.byteLength(p) < MAX_PAYLOAD_BYTES, `${Buffer.byteLength(p)} bytes`);
    const back = payloads.flatMap((p) => (JSON.parse(p) as { m: [string, { pos: number }][] }).m.map(([, m]) => m.pos));
    assert.deepEqual(
      back,
      messages.map((_, i) => i),
    );
    assert.equal(new Set(payloads).size, payloads.length);
  });

  it("delivers other processes' messages, not its own twice, and catches up from the last position seen", async () => {
    const t = transport();
    const [a, b] = [createClusterBus('a', t, testLogger), createClusterBus('b', t, testLogger)];
    const got: string[] = [];
    b.subscribe('room.changed', (m) => got.push(m.roomId));
    const local: string[] = [];
    a.subscribe('room.changed', (m) => local.push(m.roomId));
    await a.sendInTransaction?.(undefined, [{ topic: 'stream.advanced', message: { pos: 7 } }, changed(7)]);
    a.deliverLocal?.([changed(7)]);
    for (const p of t.sent.flat()) {
      a.received(p);
      b.received(p);
    }
    assert.deepEqual(local, ['!room7:example.org'], 'its own message once');
    assert.deepEqual(got, ['!room7:example.org']);
    let advanced = 0;
    b.subscribe('stream.advanced', ({ pos }) => {
      advanced = pos;
    });
    await b.catchUp();
    assert.deepEqual(got, ['!room7:example.org', '!room12:example.org'], 'what was stored after position 7');
    assert.equal(advanced, 17);
  });
});
