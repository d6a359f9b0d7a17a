// A minimal MSC4186 client for integration tests: POST the simplified sliding sync endpoint and
// read back status and JSON, plus helpers that give a user a token and an upstream v2 history
// on the fake homeserver, and wait until the proxy's poller has ingested a later v2 body.
import type { TestContext } from 'node:test';
import type { ProxyOptions } from '../../src/proxy.js';
import type { JsonObject, StrippedEvent } from './builders.js';
import { type FakeHomeserver, startFakeHomeserver } from './fake-homeserver.js';
import { startTestProxy, type TestProxy } from './proxy.js';

export const MSC4186_PATH = '/_matrix/client/unstable/org.matrix.simplified_msc3575/sync';

/** Short upstream long-polls and backoffs, so changes reach the proxy quickly. */
export const FAST_POLLER = { backoffBaseMs: 10, backoffMaxMs: 50, longPollMs: 200 };

export interface SsEvent {
  type: string;
  event_id: string;
  sender: string;
  state_key?: string;
  origin_server_ts: number;
  content: JsonObject;
  unsigned?: JsonObject;
}

export interface SsRoom {
  initial?: boolean;
  name?: string;
  avatar?: string;
  heroes?: { user_id: string; displayname?: string; avatar_url?: string }[];
  is_dm?: boolean;
  joined_count?: number;
  invited_count?: number;
  notification_count?: number;
  highlight_count?: number;
  required_state?: SsEvent[];
  timeline?: SsEvent[];
  limited?: boolean;
  prev_batch?: string;
  num_live?: number;
  bump_stamp?: number;
  invite_state?: StrippedEvent[];
  unstable_expanded_timeline?: boolean;
}

export interface SsList {
  count: number;
  ops?: { op: string; range: [number, number]; room_ids: string[] }[];
}

type Receipts = Record<string, Record<string, Record<string, { ts?: number; thread_id?: string }>>>;

export interface SsExtensions {
  to_device?: { next_batch: string; events?: { type: string; sender: string; content: JsonObject }[] };
  e2ee?: {
    device_one_time_keys_count?: Record<string, number>;
    device_unused_fallback_key_types?: string[];
    device_lists?: { changed: string[]; left: string[] };
  };
  account_data?: { global?: { type: string; content: JsonObject }[]; rooms?: Record<string, { type: string; content: JsonObject }[]> };
  receipts?: { rooms?: Record<string, { type: string; content: Receipts }> };
  typing?: { rooms?: Record<string, { type: string; content: { user_ids: string[] } }> };
}

export interface SsBody {
  pos: string;
  lists: Record<string, SsList>;
  rooms: Record<string, SsRoom>;
  extensions: SsExtensions;
  /** Error responses. */
  errcode?: string;
  error?: string;
}

export interface SsResult {
  status: number;
  body: SsBody;
  /** Wall time of the request, in ms. */
  ms: number;
}

export interface SsOptions {
  pos?: string;
  timeout?: number;
  signal?: AbortSignal;
  /** Sent as is instead of JSON.stringify(body). */
  raw?: string;
  /** Content-Type header; default application/json; null sends none of ours (fetch then says text/plain). */
  contentType?: string | null;
  /** Endpoint path; default the MSC4186 one. */
  path?: string;
}

/** POSTs one sliding sync request; token undefined sends no Authorization header. */
export async function slidingSync(
  proxy: { url: string },
  token: string | undefined,
  body: unknown,
  opts: SsOptions = {},
): Promise<SsResult> {
  const query = new URLSearchParams();
  if (opts.pos !== undefined) query.set('pos', opts.pos);
  if (opts.timeout !== undefined) query.set('timeout', String(opts.timeout));
  const headers: Record<string, string> = {};
  if (token !== undefined) headers.authorization = `Bearer ${token}`;
  if (opts.contentType !== null) headers['content-type'] = opts.contentType ?? 'application/json';
  const started = Date.now();
  const qs = query.size ? `?${query}` : '';
  const res = await fetch(`${proxy.url}${opts.path ?? MSC4186_PATH}${qs}`, {
    method: 'POST',
    headers,
    body: opts.raw ?? JSON.stringify(body),
    signal: opts.signal,
  });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : {}) as SsBody, ms: Date.now() - started };
}

export interface TestUser {
  token: string;
  userId: string;
  deviceId: string;
  /** v2 bodies the fake has been asked to serve this token (their next_batch is this count). */
  queued: number;
}

/** Registers the token and queues the user's initial v2 /sync (served on the first sliding sync). */
export function addUser(fake: FakeHomeserver, userId: string, deviceId: string, initial: JsonObject, token?: string): TestUser {
  const user: TestUser = { token: token ?? `tok-${userId.slice(1, userId.indexOf(':'))}-${deviceId}`, userId, deviceId, queued: 1 };
  fake.addToken(user.token, userId, deviceId);
  fake.queueSync(user.token, initial);
  return user;
}

/** Queues a later v2 body and resolves once the poller has ingested it (it asked for what follows). */
export async function pushSync(fake: FakeHomeserver, user: TestUser, body: JsonObject): Promise<void> {
  user.queued++;
  fake.queueSync(user.token, body);
  await fake.waitForSync(user.token, String(user.queued), 5000);
}

/** Queues a later v2 body without waiting for it. */
export function queueLater(fake: FakeHomeserver, user: TestUser, body: JsonObject): Promise<unknown> {
  user.queued++;
  fake.queueSync(user.token, body);
  return fake.waitForSync(user.token, String(user.queued), 5000);
}

export interface Stack {
  fake: FakeHomeserver;
  proxy: TestProxy;
  /**
   * Resolves when the next sliding sync request (of `connId`, when given) starts waiting for
   * news: the engine's onWait hook, so a test acts exactly when a long-poll is parked. Call it
   * before sending the request it waits for.
   */
  parked(connId?: string): Promise<void>;
}

/** A fake homeserver and a proxy in front of it, both stopped after the test. */
export async function startStack(t: TestContext, opts: Omit<ProxyOptions, 'poller'> = {}): Promise<Stack> {
  const fake = await startFakeHomeserver({ maxWaitMs: 300 });
  t.after(() => fake.close());
  const waiting = new Set<{ connId: string | undefined; resolve(): void }>();
  const onWait: ProxyOptions['onWait'] = (device, connId) => {
    opts.onWait?.(device, connId);
    for (const w of [...waiting]) {
      if (w.connId !== undefined && w.connId !== connId) continue;
      waiting.delete(w);
      w.resolve();
    }
  };
  const proxy = await startTestProxy(t, { SYNCV3_SERVER: fake.url }, { ...opts, onWait, poller: FAST_POLLER });
  const parked = (connId?: string) => new Promise<void>((resolve) => waiting.add({ connId, resolve }));
  return { fake, proxy, parked };
}

/** Polls `check` every 20 ms until true; fails after timeoutMs. */
export async function waitUntil(check: () => boolean | Promise<boolean>, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** The room ids of a list's SYNC ops, in order. */
export function listIds(body: SsBody, list: string): string[] {
  return (body.lists?.[list]?.ops ?? []).flatMap((op) => op.room_ids);
}

export const bodies = (events: SsEvent[] | undefined) => (events ?? []).map((e) => e.content.body);
