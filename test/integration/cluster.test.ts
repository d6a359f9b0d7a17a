// Several proxy processes over one database (SYNCV3_CLUSTER): devices spread across them, each
// polled by exactly one; a process killed outright (SIGKILL: its sessions end with it) loses its
// devices to the others within seconds, and its clients continue elsewhere with their pos.
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import path from 'node:path';
import { describe, it, type TestContext } from 'node:test';
import { createInProcessBus } from '../../src/bus/bus.js';
import { createAccumulator } from '../../src/ingest/accumulator.js';
import { SinceMoved, toDeviceAfter } from '../../src/store/device-inbox-table.js';
import { DEVICE_LOCK_CLASS } from '../../src/store/device-leases.js';
import { getDevice, insertToken } from '../../src/store/devices-table.js';
import { parseSyncResponse } from '../../src/upstream/sync-response.js';
import { createRoomState, message, syncResponse } from '../support/builders.js';
import { createTestDatabase, type TestDatabase, testLogger } from '../support/db.js';
import { startFakeHomeserver } from '../support/fake-homeserver.js';
import { freePort } from '../support/ports.js';
import { waitFor } from '../support/processes.js';
import { startTestProxy } from '../support/proxy.js';
import { addUser, FAST_POLLER, pushSync, slidingSync, type TestUser, waitUntil } from '../support/sliding-sync-client.js';

const MAIN = path.resolve('src/main.ts');
const FAST_CLUSTER = { rebalanceMs: 100, heartbeatMs: 200, leaseMs: 1000 };
const REQ = { lists: { all: { ranges: [[0, 9]], timeline_limit: 5, required_state: [] } } };
const TD = (since?: string) => ({ ...REQ, extensions: { to_device: { enabled: true, since } } });

/** A fake homeserver and one database that the test's processes share, and each process's environment. */
async function sharedDatabase(t: TestContext) {
  const fake = await startFakeHomeserver({ maxWaitMs: 300 });
  t.after(() => fake.close());
  const db = await createTestDatabase(t, { dropManually: true });
  t.after(() => db.drop());
  const env = (id: string) => ({ SYNCV3_SERVER: fake.url, SYNCV3_CLUSTER: id });
  return { fake, db, env };
}

/** Which process (application_name "syncv3 <id>") holds each device's lease; absent: none. */
async function owners(db: TestDatabase): Promise<Map<string, string>> {
  const { rows } = await db.pool.query<{ device: string; app: string }>(
    `SELECT d.user_id || '/' || d.device_id AS device, a.application_name AS app
       FROM devices d
       JOIN pg_locks l ON l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND l.classid::int8 = $1
            AND l.objid::int8 = (hashtext(d.user_id || E'\\n' || d.device_id)::int8 & 4294967295)
            AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
       JOIN pg_stat_activity a ON a.pid = l.pid`,
    [DEVICE_LOCK_CLASS],
  );
  const out = new Map<string, string>();
  for (const r of rows) {
    assert.ok(!out.has(r.device), `${r.device} is held twice`);
    out.set(r.device, r.app.replace(/^syncv3 /, '').replace(/ device leases$/, ''));
  }
  return out;
}

const counts = (m: Map<string, string>) => {
  const c: Record<string, number> = {};
  for (const owner of m.values()) c[owner] = (c[owner] ?? 0) + 1;
  return c;
};

/** A real proxy process (so it can be SIGKILLed) in the cluster. */
async function startChild(t: TestContext, env: Record<string, string>): Promise<{ child: ChildProcess; url: string }> {
  const port = await freePort();
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SYNCV3_')));
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN], {
    env: { ...clean, ...env, SYNCV3_BINDADDR: `127.0.0.1:${port}`, SYNCV3_LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  t.after(() => child.kill('SIGKILL'));
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`${url}/health`, 30_000);
  return { child, url };
}

describe('several processes on one database', () => {
  it('store a response only from the since it was fetched at: two pollers of one device store it once', async (t) => {
    const db = await createTestDatabase(t);
    const device = { userId: '@a:x', deviceId: 'D' };
    await insertToken(db.pool, { tokenHash: Buffer.alloc(32, 1), tokenEncrypted: Buffer.from('x'), ...device });
    // Two processes, each with its own accumulator, polled the same position and got the same response.
    const [one, two] = [1, 2].map(() => createAccumulator({ pool: db.pool, bus: createInProcessBus(testLogger), logger: testLogger }));
    const parsed = parseSyncResponse({ next_batch: 's1', to_device: { events: [{ type: 't', sender: '@b:x', content: { n: 1 } }] } });
    assert.ok('response' in parsed);
    await one?.ingest(device, parsed.response, { since: null, initial: true });
    await assert.rejects(two?.ingest(device, parsed.response, { since: null, initial: true }) ?? Promise.resolve(), (err: unknown) => {
      assert.ok(err instanceof SinceMoved);
      assert.equal(err.current, 's1');
      return true;
    });
    assert.equal((await toDeviceAfter(db.pool, device, 0, 10)).length, 1, 'the to-device message stored once');
    assert.equal((await getDevice(db.pool, device.userId, device.deviceId))?.since, 's1');
  });

  it('spread devices, take over a killed one within seconds, and serve its clients with their pos', async (t) => {
    const { fake, db, env } = await sharedDatabase(t);
    const p1 = await startTestProxy(t, env('p1'), { db, poller: FAST_POLLER, cluster: FAST_CLUSTER });
    const p2 = await startTestProxy(t, env('p2'), { db, poller: FAST_POLLER, cluster: FAST_CLUSTER });
    const p3 = await startChild(t, { ...env('p3'), SYNCV3_DB: db.url, SYNCV3_SECRET: 'test-secret' });
    const urls = [p1.url, p2.url, p3.url];

    const users: TestUser[] = [];
    const first: string[] = [];
    for (let i = 0; i < 6; i++) {
      const userId = `@u${i}:fake`;
      const room = `!r${i}:fake`;
      const user = addUser(
        fake,
        userId,
        'D',
        syncResponse({ join: { [room]: { state: createRoomState(room, userId), timeline: [message('hi', userId)] } } }),
      );
      users.push(user);
      const res = await slidingSync({ url: urls[i % 3] as string }, user.token, REQ);
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.deepEqual(Object.keys(res.body.rooms), [room]);
      first.push(res.body.pos as string);
    }
    // Spread: two devices each, every device held by exactly one process.
    await waitUntil(async () => {
      const c = counts(await owners(db));
      return c.p1 === 2 && c.p2 === 2 && c.p3 === 2;
    }, 10_000);
    const before = await owners(db);
    const victims = users.filter((u) => before.get(`${u.userId}/${u.deviceId}`) === 'p3');
    assert.equal(victims.length, 2);

    const killedAt = Date.now();
    p3.child.kill('SIGKILL');
    await waitUntil(async () => {
      const c = counts(await owners(db));
      return c.p1 === 3 && c.p2 === 3;
    }, 10_000);
    const tookMs = Date.now() - killedAt;
    assert.ok(tookMs < 10_000, `taken over in ${tookMs} ms`);

    for (const victim of victims) {
      const i = users.indexOf(victim);
      const owner = (await owners(db)).get(`${victim.userId}/${victim.deviceId}`);
      // Served by the process that does not poll it, to show that polling and serving are apart.
      const other = owner === 'p1' ? p2 : p1;
      // New data reaches the device's new poller, and the client's pos is still good anywhere.
      await pushSync(
        fake,
        victim,
        syncResponse({
          join: { [`!r${i}:fake`]: { timeline: [message('after the kill', victim.userId)] } },
          toDevice: [{ type: 'org.example', sender: '@bob:fake', content: { n: 1 } }],
        }),
      );
      const next = await slidingSync(other, victim.token, TD(), { pos: first[i], timeout: 0 });
      assert.equal(next.status, 200, JSON.stringify(next.body));
      const timeline = next.body.rooms[`!r${i}:fake`]?.timeline ?? [];
      assert.deepEqual(
        timeline.map((e) => e.content.body),
        ['after the kill'],
        'the new event once, nothing before it again',
      );
      assert.deepEqual(
        (next.body.extensions.to_device?.events ?? []).map((e) => e.content.n),
        [1],
        'the to-device message once',
      );
    }
  });

  it('answer any request on any process: alternating requests keep their pos, woken by the other process ingests', async (t) => {
    const { fake, db, env } = await sharedDatabase(t);
    let waiting = Promise.withResolvers<void>();
    const onWait = () => waiting.resolve();
    const procs = [
      await startTestProxy(t, env('a'), { db, poller: FAST_POLLER, cluster: FAST_CLUSTER, onWait }),
      await startTestProxy(t, env('b'), { db, poller: FAST_POLLER, cluster: FAST_CLUSTER, onWait }),
    ];
    const room = '!r:fake';
    const alice = addUser(
      fake,
      '@alice:fake',
      'D',
      syncResponse({ join: { [room]: { state: createRoomState(room, '@alice:fake'), timeline: [message('hi')] } } }),
    );
    const first = await slidingSync(procs[0] as { url: string }, alice.token, TD());
    assert.equal(first.status, 200, JSON.stringify(first.body));
    let pos = first.body.pos as string;
    let since = first.body.extensions.to_device?.next_batch;
    for (let i = 0; i < 6; i++) {
      const proxy = procs[i % 2] as { url: string };
      waiting = Promise.withResolvers<void>();
      // Long-poll first, then the homeserver has news: whichever process polls the device
      // stores it, and the waiting request wakes wherever it is.
      const req = slidingSync(proxy, alice.token, TD(since), { pos, timeout: 10_000 });
      await Promise.race([
        waiting.promise,
        req.then((r) => assert.fail(`answered without waiting: ${r.status} ${JSON.stringify(r.body)}`)),
      ]);
      await pushSync(
        fake,
        alice,
        syncResponse({
          join: { [room]: { timeline: [message(`m${i}`)] } },
          toDevice: [{ type: 'org.example', sender: '@bob:fake', content: { n: i } }],
        }),
      );
      const res = await req;
      assert.equal(res.status, 200, JSON.stringify(res.body));
      assert.ok(res.ms < 5000, `woken in ${res.ms} ms`);
      const got = (res.body.rooms[room]?.timeline ?? []).map((e) => e.content.body);
      const td = (res.body.extensions.to_device?.events ?? []).map((e) => e.content.n);
      // The event may come alone or, if the to-device message woke the request first, in the next response.
      if (got.length === 0 || td.length === 0) {
        const rest = await slidingSync(proxy, alice.token, TD(res.body.extensions.to_device?.next_batch), {
          pos: res.body.pos,
          timeout: 5000,
        });
        got.push(...(rest.body.rooms[room]?.timeline ?? []).map((e) => e.content.body));
        td.push(...(rest.body.extensions.to_device?.events ?? []).map((e) => e.content.n));
        pos = rest.body.pos as string;
        since = rest.body.extensions.to_device?.next_batch;
      } else {
        pos = res.body.pos as string;
        since = res.body.extensions.to_device?.next_batch;
      }
      assert.deepEqual(got, [`m${i}`], 'each event once, on whichever process');
      assert.deepEqual(td, [i], 'each to-device message once');
    }
    // A pos the connection has moved past is refused on both, though one of them held it in memory.
    for (const proxy of procs) {
      const stale = await slidingSync(proxy, alice.token, TD(), { pos: first.body.pos, timeout: 0 });
      assert.equal(stale.status, 400);
      assert.equal(stale.body.errcode, 'M_UNKNOWN_POS');
    }
  });

  it('catch up when the bus listener drops: a long-poll wakes for what was stored while it was away', async (t) => {
    const { fake, db } = await sharedDatabase(t);
    const waits = { a: Promise.withResolvers<void>(), b: Promise.withResolvers<void>() };
    const start = (id: 'a' | 'b') =>
      startTestProxy(
        t,
        { SYNCV3_SERVER: fake.url, SYNCV3_CLUSTER: id },
        { db, poller: FAST_POLLER, cluster: FAST_CLUSTER, onWait: () => waits[id].resolve() },
      );
    const procs = { a: await start('a'), b: await start('b') };
    const room = '!r:fake';
    const alice = addUser(
      fake,
      '@alice:fake',
      'D',
      syncResponse({ join: { [room]: { state: createRoomState(room, '@alice:fake'), timeline: [message('hi')] } } }),
    );
    const first = await slidingSync(procs.a, alice.token, REQ);
    assert.equal(first.status, 200);
    await waitUntil(async () => (await owners(db)).size === 1);
    // Served by the process that does not poll the device: it hears of changes only through the bus.
    const deaf = (await owners(db)).get('@alice:fake/D') === 'a' ? 'b' : 'a';
    const req = slidingSync(procs[deaf], alice.token, REQ, { pos: first.body.pos, timeout: 10_000 });
    await Promise.race([waits[deaf].promise, req.then((r) => assert.fail(`answered without waiting: ${r.status}`))]);
    const cut = await db.pool.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [
      `syncv3 ${deaf} bus`,
    ]);
    assert.equal(cut.rowCount, 1, 'the listener connection was cut');
    await pushSync(fake, alice, syncResponse({ join: { [room]: { timeline: [message('while the listener was away')] } } }));
    const res = await req;
    assert.equal(res.status, 200);
    assert.ok(res.ms < 5000, `woken in ${res.ms} ms`);
    assert.deepEqual(
      (res.body.rooms[room]?.timeline ?? []).map((e) => e.content.body),
      ['while the listener was away'],
    );
  });
});
