// Two real proxy processes with SYNCV3_CLUSTER over one database, against Synapse, behind a
// round-robin that alternates every request between them (the worst routing there is: no request
// of a connection lands where its previous one was), and two matrix-js-sdk 43 clients chatting
// through it. Then one process is SIGKILLed and the clients carry on through the other with the
// pos they hold: no M_UNKNOWN_POS, no restarted sync, nothing delivered twice.
//
// The balancer sees every request and response, so "exactly once" and "no reset" are checked on
// the wire, not through the SDK (which hides duplicates by event id).
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { test } from 'node:test';
import * as sdk from 'matrix-js-sdk';
import { type Logger, logger as sdkGlobalLogger } from 'matrix-js-sdk/lib/logger.js';
import { SlidingSync } from 'matrix-js-sdk/lib/sliding-sync.js';
import { type E2eProxy, failed, startE2eCluster } from '../support/e2e-proxy.js';
import { eventually, type Json, registerUser, SLIDING_SYNC_PATH } from '../support/matrix-users.js';
import { quietSdkLog, silenceGlobal } from '../support/quiet-sdk-log.js';
import { homeserverForFile } from '../support/synapse.js';

const hs = await homeserverForFile();

const sdkLog = quietSdkLog();
silenceGlobal(sdkGlobalLogger, sdkLog);
const quiet = sdkLog.logger as Logger;

interface Exchange {
  token: string;
  upstream: string;
  pos: string | null;
  status: number;
  body: Json;
}

/**
 * A round-robin reverse proxy over `upstreams`, alternating each client's requests. As nginx does by default, a request whose
 * connection is refused goes to the next upstream (it was never sent), while one that fails after
 * it was sent (a process killed under a long-poll) is answered 502: the client must retry it.
 */
async function roundRobin(upstreams: string[]) {
  const exchanges: Exchange[] = [];
  // Per client (access token), so each client's consecutive requests alternate whatever
  // the others send in between.
  const next = new Map<string, number>();
  const server = http.createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const body = Buffer.concat(chunks);
    const client = req.headers.authorization ?? '';
    const first = (next.get(client) ?? 0) % upstreams.length;
    next.set(client, first + 1);
    for (let attempt = 0; attempt < upstreams.length; attempt++) {
      const upstream = upstreams[(first + attempt) % upstreams.length] as string;
      const outcome = await forward(upstream, req, body);
      if (outcome === 'refused') continue;
      if (outcome instanceof Error) {
        res.writeHead(502, { 'content-type': 'text/plain' }).end(outcome.message);
        return;
      }
      const url = new URL(req.url ?? '/', 'http://x');
      if (url.pathname === SLIDING_SYNC_PATH) {
        let parsed: Json;
        try {
          parsed = JSON.parse(outcome.body.toString());
        } catch {
          parsed = undefined;
        }
        exchanges.push({
          token: req.headers.authorization ?? '',
          upstream,
          pos: url.searchParams.get('pos'),
          status: outcome.status,
          body: parsed,
        });
      }
      res.writeHead(outcome.status, outcome.headers).end(outcome.body);
      return;
    }
    res.writeHead(502, { 'content-type': 'text/plain' }).end('no upstream accepts connections');
  });
  server.listen(0, '127.0.0.1');
  await new Promise((resolve) => server.once('listening', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    exchanges,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

function forward(
  upstream: string,
  req: http.IncomingMessage,
  body: Buffer,
): Promise<'refused' | Error | { status: number; headers: http.IncomingHttpHeaders; body: Buffer }> {
  return new Promise((resolve) => {
    const target = new URL(req.url ?? '/', upstream);
    const headers = { ...req.headers, host: target.host, 'content-length': String(body.length) };
    delete headers.connection;
    // No keep-alive: a pooled socket to a killed process would fail after the request was
    // written, which a real balancer's fresh connection does not.
    const out = http.request(target, { method: req.method, headers, agent: false }, (up) => {
      const chunks: Buffer[] = [];
      up.on('data', (c: Buffer) => chunks.push(c));
      up.on('end', () => {
        const h = { ...up.headers };
        delete h['transfer-encoding'];
        delete h.connection;
        resolve({ status: up.statusCode ?? 502, headers: h, body: Buffer.concat(chunks) });
      });
      up.on('error', (err) => resolve(err));
    });
    out.on('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED' ? 'refused' : err));
    out.end(body);
  });
}

test('two proxy processes behind a round-robin: chat, to-device, and one process killed', {
  skip: hs.skip,
  timeout: 240_000,
}, async (t) => {
  const hsUrl = hs.url as string;
  // Before the proxies' own cleanup (hooks run in order): the SDKs stop first, so none of their
  // requests is left failing against stopped processes.
  const cleanup: Array<() => unknown> = [];
  t.after(async () => {
    for (const step of cleanup) await step();
  });
  const proxies: E2eProxy[] = await startE2eCluster(t, hsUrl, 2, { SYNCV3_CLUSTER: '1' });
  const lb = await roundRobin(proxies.map((p) => p.url));
  cleanup.push(lb.close);
  const [alice, bob] = await Promise.all([registerUser(hsUrl, 'alice'), registerUser(hsUrl, 'bob')]);
  const room = await bob.createRoom({ name: 'Two processes', invite: [alice.userId] });
  await alice.join(room);

  t.afterEach((st) => {
    if (failed(st)) process.stderr.write(`\n--- matrix-js-sdk log (last 50 lines):\n${sdkLog.tail(50)}\n`);
  });

  const toDevice = new Map<string, number>();
  const clients = [alice, bob].map((user) => {
    const client = sdk.createClient({
      baseUrl: lb.url,
      accessToken: user.accessToken,
      userId: user.userId,
      deviceId: user.deviceId,
      logger: quiet,
    });
    const lists = new Map([['all', { ranges: [[0, 9]], timeline_limit: 10, required_state: [['m.room.name', '']] }]]);
    const slidingSync = new SlidingSync(lb.url, lists, { timeline_limit: 10, required_state: [] }, client, 5000);
    return { user, client, slidingSync };
  });
  const aliceClient = (clients[0] as (typeof clients)[number]).client;
  aliceClient.on(sdk.ClientEvent.ReceivedToDeviceMessage, ({ message }) => {
    if (message.type === 'org.example.cluster') {
      const id = String(message.content.id);
      toDevice.set(id, (toDevice.get(id) ?? 0) + 1);
    }
  });
  for (const c of clients) await c.client.startClient({ slidingSync: c.slidingSync });
  cleanup.unshift(() => {
    for (const c of clients) c.client.stopClient();
  });

  const texts = (client: sdk.MatrixClient) =>
    (client.getRoom(room)?.getLiveTimeline().getEvents() ?? [])
      .filter((e) => e.getType() === 'm.room.message' && e.status === null)
      .map((e) => e.getContent().body as string);
  const sent: string[] = [];

  /** Alternating senders, each message awaited in both SDKs before the next is sent. */
  async function chat(prefix: string, n: number) {
    for (let i = 0; i < n; i++) {
      const body = `${prefix} ${i}`;
      const from = clients[i % 2] as (typeof clients)[number];
      await from.client.sendTextMessage(room, body);
      sent.push(body);
      for (const c of clients)
        await eventually(
          `"${body}" in ${c.user.localpart}'s SDK`,
          async () => (texts(c.client).at(-1) === body ? true : undefined),
          20_000,
        );
    }
    for (const c of clients) assert.deepEqual(texts(c.client), sent, `${c.user.localpart} sees every message in order`);
  }

  async function sendToDevice(id: string) {
    await bob.sendToDevice('org.example.cluster', { [alice.userId]: { [alice.deviceId]: { id } } });
    await eventually(`to-device ${id} at Alice's SDK`, async () => (toDevice.has(id) ? true : undefined), 20_000);
  }

  /** What the wire shows: no reset, every message and to-device message delivered once. */
  function checkWire() {
    for (const c of clients) {
      const mine = lb.exchanges.filter((x) => x.token === `Bearer ${c.user.accessToken}`);
      assert.ok(mine.length > 0);
      const unknownPos = mine.filter((x) => x.body?.errcode === 'M_UNKNOWN_POS');
      assert.deepEqual(unknownPos, [], `${c.user.localpart}: no M_UNKNOWN_POS`);
      const given = new Set<string>();
      for (const [i, x] of mine.entries()) {
        if (i === 0) assert.equal(x.pos, null);
        else {
          assert.notEqual(x.pos, null, `${c.user.localpart}: request ${i} has a pos (the SDK did not restart its sync)`);
          assert.ok(given.has(x.pos as string), `${c.user.localpart}: request ${i}'s pos ${x.pos} was answered to it before`);
        }
        if (x.status === 200) given.add(x.body.pos);
      }
      const seen = new Map<string, number>();
      for (const x of mine) {
        if (x.status !== 200) continue;
        for (const ev of x.body.rooms?.[room]?.timeline ?? []) {
          if (ev.type === 'm.room.message') seen.set(ev.event_id, (seen.get(ev.event_id) ?? 0) + 1);
        }
      }
      assert.equal(seen.size, sent.length, `${c.user.localpart}: every message delivered`);
      assert.deepEqual(
        [...seen].filter(([, n]) => n !== 1),
        [],
        `${c.user.localpart}: no message delivered twice`,
      );
      // Both processes answered this client: the round-robin really alternated.
      assert.equal(new Set(mine.map((x) => x.upstream)).size, 2);
    }
    const wireToDevice = lb.exchanges
      .filter((x) => x.token === `Bearer ${alice.accessToken}` && x.status === 200)
      .flatMap((x) => (x.body.extensions?.to_device?.events ?? []) as Json[])
      .filter((e) => e.type === 'org.example.cluster')
      .map((e) => String(e.content.id));
    assert.deepEqual(wireToDevice, [...toDevice.keys()], 'each to-device message on the wire once, in order');
    assert.ok([...toDevice.values()].every((n) => n === 1));
  }

  await t.test('both users see each other’s messages in order, exactly once', async () => {
    await eventually('both SDKs to have the room', async () => (clients.every((c) => c.client.getRoom(room)) ? true : undefined), 20_000);
    await chat('before', 6);
    checkWire();
  });

  await t.test('a to-device message arrives once', async () => {
    await sendToDevice('a');
    await sendToDevice('b');
    checkWire();
  });

  await t.test('one process SIGKILLed: the clients continue through the other without a reset', async () => {
    await (proxies[1] as E2eProxy).kill();
    const killedAt = lb.exchanges.length;
    await chat('after', 6);
    await sendToDevice('c');
    await bob.sendToDevice('org.example.cluster', { [alice.userId]: { [alice.deviceId]: { id: 'd' } } });
    await chat('last', 2);
    await eventually("to-device d at Alice's SDK", async () => (toDevice.has('d') ? true : undefined), 20_000);
    checkWire();
    const after = lb.exchanges.slice(killedAt);
    assert.ok(after.length > 0 && after.every((x) => x.upstream === (proxies[0] as E2eProxy).url));
    for (const c of clients) assert.notEqual(c.client.getSyncState(), 'ERROR');
  });
});
