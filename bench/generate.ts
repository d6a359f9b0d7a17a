// Deterministic v2 /sync payloads for benchmarks: rooms with realistic state and timelines.
let counter = 0;
const BASE_TS = 1_700_000_000_000;

function event(type: string, sender: string, content: Record<string, unknown>, stateKey?: string) {
  counter++;
  const e: Record<string, unknown> = { type, sender, content, event_id: `$bench${counter}:bench`, origin_server_ts: BASE_TS + counter };
  if (stateKey !== undefined) e.state_key = stateKey;
  return e;
}

export const roomId = (i: number) => `!room${i}:bench`;
export const userId = (i: number) => `@user${i}:bench`;

/** State of a room created by `members[0]` with everyone joined: about 7 + members events. */
function roomState(i: number, members: string[]) {
  const creator = members[0] as string;
  return [
    event('m.room.create', creator, { room_version: '11' }, ''),
    event('m.room.power_levels', creator, { users: { [creator]: 100 } }, ''),
    event('m.room.join_rules', creator, { join_rule: 'invite' }, ''),
    event('m.room.history_visibility', creator, { history_visibility: 'shared' }, ''),
    event('m.room.name', creator, { name: `Bench room ${i}` }, ''),
    event('m.room.topic', creator, { topic: `Topic of room ${i}` }, ''),
    ...(i % 3 === 0 ? [event('m.room.encryption', creator, { algorithm: 'm.megolm.v1.aes-sha2' }, '')] : []),
    ...members.map((m) => event('m.room.member', m, { membership: 'join', displayname: m.slice(1, m.indexOf(':')) }, m)),
  ];
}

/** An initial v2 sync for a user in the given rooms, `timeline` messages each. */
export function initialSync(rooms: { index: number; members: string[] }[], timeline: number) {
  const join: Record<
    string,
    {
      state: { events: unknown[] };
      timeline: { events: unknown[]; limited?: boolean; prev_batch?: string };
      unread_notifications?: unknown;
    }
  > = {};
  for (const { index, members } of rooms) {
    join[roomId(index)] = {
      state: { events: roomState(index, members) },
      timeline: {
        events: Array.from({ length: timeline }, (_, k) =>
          event('m.room.message', members[k % members.length] as string, { msgtype: 'm.text', body: `message ${k} in ${index}` }),
        ),
        limited: true,
        prev_batch: `pb${index}`,
      },
      unread_notifications: { notification_count: index % 5, highlight_count: 0 },
    };
  }
  return { next_batch: `nb${counter}`, rooms: { join } };
}

/** An incremental v2 sync carrying one new message in a room. */
export function liveMessage(room: number, sender: string, body: string) {
  return {
    next_batch: `nb${++counter}`,
    rooms: {
      join: {
        [roomId(room)]: {
          timeline: { events: [event('m.room.message', sender, { msgtype: 'm.text', body })], limited: false, prev_batch: `pbl${counter}` },
        },
      },
    },
  };
}

export const eventCount = (sync: { rooms: { join: Record<string, { state: { events: unknown[] }; timeline: { events: unknown[] } }> } }) =>
  Object.values(sync.rooms.join).reduce((n, r) => n + r.state.events.length + r.timeline.events.length, 0);

/**
 * Fan-out: user `u` of many, in `perUser` rooms: room 0 shared by all, the rest from a pool of
 * `pool` rooms. A pooled room's own state (create, name, join rules…) has fixed event ids, so
 * every user's copy of it is the same events; only the user's own member event is theirs.
 */
export function fanOutInitialSync(u: number, perUser: number, pool: number) {
  const join: Record<string, unknown> = {};
  const rooms = [0, ...Array.from({ length: perUser - 1 }, (_, k) => 1 + ((u * 7 + k) % pool))];
  for (const index of rooms) {
    const creator = userId(0);
    const fixed = (type: string, content: Record<string, unknown>, n: number) => ({
      type,
      sender: creator,
      content,
      state_key: '',
      event_id: `$fan${index}_${n}:bench`,
      origin_server_ts: BASE_TS + n,
    });
    const me = userId(u);
    join[roomId(index)] = {
      state: {
        events: [
          fixed('m.room.create', { room_version: '11' }, 1),
          fixed('m.room.power_levels', { users: { [creator]: 100 } }, 2),
          fixed('m.room.join_rules', { join_rule: 'public' }, 3),
          fixed('m.room.history_visibility', { history_visibility: 'shared' }, 4),
          fixed('m.room.name', { name: `Fan-out room ${index}` }, 5),
        ],
      },
      timeline: {
        events: [
          {
            type: 'm.room.member',
            sender: me,
            content: { membership: 'join' },
            state_key: me,
            event_id: `$fanjoin${index}_${u}:bench`,
            origin_server_ts: BASE_TS + 10 + u,
          },
        ],
        limited: false,
        prev_batch: `pbf${index}`,
      },
    };
  }
  return { next_batch: `nbf${u}`, rooms: { join } };
}
