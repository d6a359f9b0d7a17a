// Synapse as the oracle: the same user sends the same sliding sync body to the proxy and to
// Synapse's native endpoint, and the answers must agree once what legitimately differs is
// normalised away. Every normalisation below says why it is legitimate; anything not listed
// here must be identical. (Key order inside objects never matters: deepStrictEqual ignores it.)
import assert from 'node:assert/strict';
import { eventually, type Json, type MatrixUser, txnId } from '../support/matrix-users.js';

type Room = Record<string, Json>;

/** Fields of an event that differ only because of when or how it was served. */
function normaliseEvent(event: Json): Json {
  const e = structuredClone(event);
  if (e.unsigned) {
    // `age` is computed at serve time (ms since the event was sent): it differs between any two
    // responses. `membership` (MSC4115) is the requester's membership at the event, which Synapse
    // adds and a v2 /sync consumer has no way to reproduce; clients do not need it for sync.
    delete e.unsigned.age;
    delete e.unsigned.membership;
    // With those gone an empty `unsigned` carries nothing; the proxy leaves it out altogether.
    if (Object.keys(e.unsigned).length === 0) delete e.unsigned;
  }
  return e;
}

const byTypeAndKey = (a: Json, b: Json) => `${a.type}\0${a.state_key}`.localeCompare(`${b.type}\0${b.state_key}`);

function normaliseRoom(room: Room): Room {
  const r = structuredClone(room);
  // Tokens are opaque and server-specific: the proxy hands out the homeserver's v2 tokens,
  // Synapse its sliding sync ones. Whether a token is usable is tested on its own.
  delete r.prev_batch;
  // Synapse always sends 0 (it has no counts in sliding sync); the proxy sends the real v2
  // unread counts. Ours are asserted separately.
  delete r.notification_count;
  delete r.highlight_count;
  if (r.timeline) r.timeline = r.timeline.map(normaliseEvent);
  // Synapse leaves an empty timeline out; the proxy may send `timeline: []`. Both add nothing.
  if (r.timeline?.length === 0) delete r.timeline;
  // required_state is a set: neither server promises an order.
  if (r.required_state) r.required_state = r.required_state.map(normaliseEvent).sort(byTypeAndKey);
  if (r.invite_state) {
    // Stripped state of an invite or a knock: {type, state_key, sender, content}. The proxy
    // passes on the v2 invite or knock event as the homeserver gave it (with event_id,
    // origin_server_ts, unsigned; a knock's unsigned.knock_room_state repeats the stripped
    // state), where Synapse appends a stripped copy; clients read only the stripped fields.
    r.invite_state = r.invite_state.map((e: Json) => ({ type: e.type, state_key: e.state_key, sender: e.sender, content: e.content }));
    // `name` and `avatar` are compared: Synapse reads them from the room's current state (its
    // server is in the room), the proxy from the stripped state, which carries both; they
    // agree unless the room changes them after the invite.
  }
  return r;
}

/**
 * bump_stamp values are opaque (Synapse: its stream ordering; the proxy: its own event
 * positions), so only the order they induce can be compared: each becomes its rank among the
 * response's rooms (0 = most recent; equal stamps share a rank).
 */
function rankBumpStamps(rooms: Record<string, Room>) {
  const stamps = [...new Set(Object.values(rooms).flatMap((r) => (typeof r.bump_stamp === 'number' ? [r.bump_stamp] : [])))].sort(
    (a, b) => b - a,
  );
  for (const r of Object.values(rooms)) if (typeof r.bump_stamp === 'number') r.bump_stamp = `rank ${stamps.indexOf(r.bump_stamp)}`;
}

export function normalise(res: Json): Json {
  const out = structuredClone(res);
  // Connection positions are opaque and server-specific.
  delete out.pos;
  // Synapse sends `lists` only when the request had lists; the proxy always does. An empty
  // object and an absent one both say "no lists".
  if (out.lists && Object.keys(out.lists).length === 0) delete out.lists;
  for (const list of Object.values<Json>(out.lists ?? {})) {
    const ops = list.ops ?? [];
    // When exactly one range starts at 0 and covers the whole list, Synapse skips sorting and
    // returns room_ids in arbitrary order; only the set can be compared then.
    if (ops.length === 1 && ops[0].range[0] === 0 && ops[0].range[1] >= list.count - 1) ops[0].room_ids.sort();
  }
  const rooms: Record<string, Room> = {};
  for (const [id, room] of Object.entries<Room>(out.rooms ?? {})) rooms[id] = normaliseRoom(room);
  rankBumpStamps(rooms);
  out.rooms = rooms;
  return out;
}

/**
 * Normalises both answers and asserts they agree. On an incremental (non-initial) room Synapse
 * leaves out an unchanged bump_stamp while the proxy repeats it; both mean "unchanged", so a
 * stamp present on one side only of a non-initial room is dropped.
 */
export function assertSameAsSynapse(ours: Json, synapse: Json, what: string): void {
  const a = normalise(ours);
  const b = normalise(synapse);
  for (const [id, room] of Object.entries<Room>(a.rooms)) {
    const other = b.rooms[id];
    if (!other || room.initial || other.initial) continue;
    if ((room.bump_stamp === undefined) !== (other.bump_stamp === undefined)) {
      delete room.bump_stamp;
      delete other.bump_stamp;
    }
  }
  assert.deepStrictEqual(a, b, `${what}: proxy (actual) and Synapse (expected) disagree`);
}

/** Room ids of a list's single SYNC op, in order. */
export const listRoomIds = (res: Json, list: string): string[] => res.lists?.[list]?.ops?.[0]?.room_ids ?? [];

/**
 * Waits until the proxy has ingested everything the homeserver had for `user` when this was
 * called: a fresh global account data write goes into the same v2 stream after all earlier
 * events, and the proxy stores each v2 response atomically, so once the proxy reports the
 * marker it has stored everything before it.
 */
export async function settle(proxyUrl: string, user: MatrixUser, timeoutMs = 15_000): Promise<void> {
  const marker = txnId();
  await user.setAccountData('org.example.e2e.marker', { marker });
  await eventually(
    `the proxy to catch up with ${user.userId}`,
    async () => {
      const res = await user.slidingSync(proxyUrl, { conn_id: 'e2e-settle', extensions: { account_data: { enabled: true } } });
      const seen = (res.extensions?.account_data?.global ?? []).some(
        (e: Json) => e.type === 'org.example.e2e.marker' && e.content?.marker === marker,
      );
      return seen ? true : undefined;
    },
    timeoutMs,
  );
}
