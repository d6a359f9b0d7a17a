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
