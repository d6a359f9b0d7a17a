// Property-based hostile input for both sliding sync endpoints (MSC4186 and MSC3575): bodies
// and query strings built from the shapes clients send, bent every way (wrong types, prototype
// names, NUL and lone surrogates, huge and fractional numbers, deep nesting, broken JSON).
// Every answer must come within seconds, never be a 5xx, and be a Matrix error when it is a
// 4xx; a request held with a timeout Node's timers cannot hold must not spin the event loop;
// and the heap must come back to where it started. Seedable: SYNCV3_FUZZ_SEED=<n>.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import fc from 'fast-check';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { addUser, MSC4186_PATH, slidingSync, startStack } from '../support/sliding-sync-client.js';

const MSC3575_PATH = '/_matrix/client/unstable/org.matrix.msc3575/sync';
const ME = '@alice:fake';
const RUNS = Number(process.env.SYNCV3_FUZZ_RUNS ?? 300);
const SEED = Number(process.env.SYNCV3_FUZZ_SEED ?? Date.now() % 2 ** 31);
/** Nothing here is held (no request carries a pos the server gave): each is answered at once. */
const ANSWER_WITHIN_MS = 5000;

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

/** A JSON object written as entries, so that keys like `__proto__` reach the wire as keys. */
class Dict {
  constructor(readonly entries: [string, unknown][]) {}
}

/** JSON text for generated values; Dict entries in order, duplicates and prototype names included. */
function toText(v: unknown): string {
  if (v instanceof Dict) return `{${v.entries.map(([k, x]) => `${JSON.stringify(k)}:${toText(x)}`).join(',')}}`;
  if (Array.isArray(v)) return `[${v.map(toText).join(',')}]`;
  if (typeof v === 'number' && !Number.isFinite(v)) return '1e999';
  return JSON.stringify(v) ?? 'null';
}

const PROTO_NAMES = ['__proto__', 'toString', 'constructor', 'valueOf', 'hasOwnProperty', 'prototype'];
const oddString = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 20 }),
  fc.constantFrom(...PROTO_NAMES, '', '\u0000', 'a\u0000b', '\ud800', '!a:fake', '*', '$LAZY', '$ME', 'x'.repeat(300)),
);
const oddNumber = fc.oneof(
  fc.integer(),
  fc.double(),
  fc.constantFrom(0, -1, 1.5, 2 ** 31 - 1, 2 ** 31, 2 ** 53, 2 ** 64, 1e300, Number.POSITIVE_INFINITY),
);
const anything = fc.oneof({ maxDepth: 2 }, fc.jsonValue({ maxDepth: 2 }), oddString, oddNumber, fc.constant(null));
/** Mostly the right shape, sometimes anything at all: deep enough to reach the engine, odd enough to break it. */
const either = <T>(arb: fc.Arbitrary<T>) => fc.oneof({ weight: 40, arbitrary: arb }, { weight: 1, arbitrary: anything });
/** Mostly a plausible count or index, sometimes any number. */
const smallOr = (max: number) => fc.oneof({ weight: 20, arbitrary: fc.nat(max) }, { weight: 1, arbitrary: oddNumber });
/** Mostly plain text, sometimes odd. */
const name = fc.oneof({ weight: 30, arbitrary: fc.stringMatching(/^[a-z]{1,8}$/) }, { weight: 1, arbitrary: oddString });
const dict = <T>(key: fc.Arbitrary<string>, value: fc.Arbitrary<T>, maxLength = 4) =>
  fc.array(fc.tuple(key, value), { maxLength }).map((e) => new Dict(e));
const record = (fields: Record<string, fc.Arbitrary<unknown>>) =>
  fc.record(fields, { requiredKeys: [] }).map((r) => new Dict(Object.entries(r)));

const range = fc.tuple(smallOr(20), smallOr(40));
const requiredState = fc.array(
  either(fc.tuple(fc.oneof(name, fc.constantFrom('m.room.name', '*')), fc.oneof(name, fc.constantFrom('', '$ME', '$LAZY', '*')))),
  { maxLength: 4 },
);
const filters = record({
  is_dm: either(fc.boolean()),
  is_encrypted: either(fc.boolean()),
  is_invite: either(fc.boolean()),
  room_types: either(fc.array(fc.option(oddString), { maxLength: 3 })),
  spaces: either(fc.array(oddString, { maxLength: 3 })),
  room_name_like: either(oddString),
  tags: either(fc.array(oddString, { maxLength: 3 })),
});
const list = record({
  ranges: either(fc.array(either(range), { maxLength: 3 })),
  range: either(range),
  timeline_limit: either(smallOr(20)),
  required_state: either(requiredState),
  filters: either(filters),
  sort: either(fc.array(fc.oneof(oddString, fc.constantFrom('by_recency', 'by_name')), { maxLength: 3 })),
  bump_event_types: either(fc.array(oddString, { maxLength: 3 })),
  include_old_rooms: either(record({ timeline_limit: either(smallOr(5)), required_state: either(requiredState) })),
  deleted: either(fc.boolean()),
});
const scoped = record({
  enabled: either(fc.boolean()),
  lists: either(fc.array(name)),
  rooms: either(fc.array(fc.oneof(name, fc.constant('!a:fake')))),
});
const body = record({
  conn_id: either(name),
  txn_id: either(name),
  timeout: either(smallOr(50)),
  lists: either(dict(fc.oneof(name, fc.constantFrom(...PROTO_NAMES)), either(list))),
  room_subscriptions: either(
    dict(
      fc.oneof(name, fc.constant('!a:fake')),
      either(record({ timeline_limit: either(smallOr(5)), required_state: either(requiredState) })),
    ),
  ),
  unsubscribe_rooms: either(fc.array(fc.oneof(name, fc.constant('!a:fake')), { maxLength: 3 })),
  extensions: either(
    record({
      to_device: either(
        record({
          enabled: either(fc.boolean()),
          limit: either(smallOr(100)),
          since: either(fc.oneof(fc.stringMatching(/^\d{1,3}$/), oddString)),
        }),
      ),
      e2ee: either(record({ enabled: either(fc.boolean()) })),
      account_data: either(scoped),
      receipts: either(scoped),
      typing: either(scoped),
    }),
  ),
});
/** Nested deeper than any parser recursion should go. */
const deep = fc.integer({ min: 1000, max: 20_000 }).map((n) => `{"lists":{"a":{"filters":${'['.repeat(n)}${']'.repeat(n)}}}}`);
const rawBody = fc.oneof(
  { weight: 24, arbitrary: body.map(toText) },
  { weight: 1, arbitrary: anything.map(toText) },
  { weight: 1, arbitrary: fc.string({ maxLength: 40 }) },
  { weight: 1, arbitrary: deep },
);

/** Every UTF-8 byte percent-encoded (lone surrogates included, as U+FFFD): any string fits a query. */
const percentEncoded = (v: string) => [...Buffer.from(v, 'utf8')].map((b) => `%${b.toString(16).padStart(2, '0')}`).join('');

/** A pos that no connection was ever given (purely numeric ones are pushed far out of range). */
const pos = oddString.map((p) => (/^\d+$/.test(p) ? `9${p}00000000000000000000` : p));
const query = fc
  .record({
    pos: fc.oneof({ weight: 3, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: pos }),
    timeout: fc.option(fc.oneof({ weight: 6, arbitrary: fc.stringMatching(/^\d{1,25}$/) }, { weight: 1, arbitrary: oddString }), {
      nil: undefined,
    }),
  })
  .map((r) =>
    Object.entries(r)
      .filter((e): e is [string, string] => typeof e[1] === 'string')
      .map(([k, v]) => `${k}=${percentEncoded(v)}`)
      .join('&'),
  );

/** Inputs that once answered 500 (found against real Synapse): always tried, before the random ones. */
const KNOWN_HOSTILE: [string, string, string][] = [
  [MSC4186_PATH, '', '{"conn_id":"a\\u0000b"}'],
  [MSC3575_PATH, '', '{"conn_id":"a\\u0000b"}'],
  [MSC4186_PATH, 'pos=1%00', '{}'],
  ...['toString', 'constructor', 'valueOf', '__proto__'].map((n): [string, string, string] => [
    MSC3575_PATH,
    '',
    `{"lists":{"${n}":{"ranges":[[0,9]]}}}`,
  ]),
  [MSC4186_PATH, 'timeout=99999999999999999999', '{}'],
  [MSC4186_PATH, '', '{"timeout":1e300}'],
];

describe('hostile input, fuzzed', () => {
  it(`answers every body and query on both endpoints in time, never with a 5xx (seed ${SEED})`, { timeout: 600_000 }, async (t) => {
    const stack = await startStack(t);
    const alice = addUser(
      stack.fake,
      ME,
      'A',
      syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', ME, { name: 'A' }), timeline: [message('hi')] } } }),
    );
    assert.equal((await slidingSync(stack.proxy, alice.token, { lists: { a: { ranges: [[0, 9]] } } })).status, 200);
    const send = async (path: string, q: string, raw: string) => {
      const res = await fetch(`${stack.proxy.url}${path}${q ? `?${q}` : ''}`, {
        method: 'POST',
        headers: { authorization: `Bearer ${alice.token}`, 'content-type': 'application/json' },
        body: raw,
        signal: AbortSignal.timeout(ANSWER_WITHIN_MS),
      });
      return { status: res.status, text: await res.text() };
    };
    // Warm up, then take the heap's measure.
    for (let i = 0; i < 20; i++) await send(MSC4186_PATH, '', '{}');
    gc();
    const heapBefore = process.memoryUsage().heapUsed;

    const statuses = new Map<number, number>();
    await fc.assert(
      fc.asyncProperty(fc.constantFrom(MSC4186_PATH, MSC3575_PATH), query, rawBody, async (path, q, raw) => {
        const res = await send(path, q, raw);
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        const why = `${res.status} ${res.text.slice(0, 300)}`;
        assert.ok(res.status < 500, why);
        const answer = JSON.parse(res.text) as { errcode?: unknown; error?: unknown; pos?: unknown };
        if (res.status >= 400) {
          assert.equal(typeof answer.errcode, 'string', why);
          assert.equal(typeof answer.error, 'string', why);
        } else {
          assert.equal(res.status, 200, why);
          assert.equal(typeof answer.pos, 'string', why);
        }
      }),
      { numRuns: RUNS, seed: SEED, examples: KNOWN_HOSTILE },
    );
    gc();
    const grown = (process.memoryUsage().heapUsed - heapBefore) / 1024 / 1024;
    t.diagnostic(`statuses ${JSON.stringify(Object.fromEntries(statuses))}; heap ${grown.toFixed(1)} MiB over the baseline`);
    assert.ok(grown < 32, `heap grew ${grown.toFixed(1)} MiB`);
  });

  it('holds a request with a timeout beyond what setTimeout can wait without spinning the event loop', async (t) => {
    // The engine says when a request starts waiting: then it is held.
    let started: (() => void) | undefined;
    const stack = await startStack(t, { onWait: () => started?.() });
    const alice = addUser(
      stack.fake,
      ME,
      'A',
      syncResponse({ join: { '!a:fake': { state: createRoomState('!a:fake', ME), timeline: [] } } }),
    );

    // Node says so each time a timer is asked to wait longer than it can (it then waits 1 ms).
    let overflows = 0;
    const onWarning = (w: Error) => {
      if (w.name === 'TimeoutOverflowWarning') overflows++;
    };
    process.on('warning', onWarning);
    t.after(() => process.off('warning', onWarning));

    const request = { lists: { a: { ranges: [[0, 9]] } } };
    for (const path of [MSC4186_PATH, MSC3575_PATH]) {
      const opened = await slidingSync(stack.proxy, alice.token, request, { path, timeout: 0 });
      assert.equal(opened.status, 200, JSON.stringify(opened.body));
      const underWay = new Promise<void>((resolve) => (started = resolve));
      const abort = new AbortController();
      const held = slidingSync(
        stack.proxy,
        alice.token,
        { ...request, timeout: 2 ** 31 + 5 },
        { pos: opened.body.pos, path, signal: abort.signal },
      ).then(
        (res) => `answered ${res.status}`,
        () => 'still held',
      );
      await underWay;
      await assertCalm(t, path);
      abort.abort();
      assert.equal(await held, 'still held');
      assert.equal(overflows, 0, `${path}: timers asked to wait past 2^31-1 ms`);
    }
  });
});

/** The event loop stays nearly idle over a second while a request is held. */
async function assertCalm(t: { diagnostic(m: string): void }, what: string) {
  const start = performance.eventLoopUtilization();
  await new Promise((r) => setTimeout(r, 1000));
  const { utilization } = performance.eventLoopUtilization(start);
  t.diagnostic(`${what}: event loop ${(utilization * 100).toFixed(1)}% busy while a request is held`);
  assert.ok(utilization < 0.1, `${what}: event loop ${(utilization * 100).toFixed(1)}% busy while a request is held`);
}
