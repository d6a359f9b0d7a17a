// The page's model of one MSC4186 connection, kept apart from the DOM so it can be unit tested:
// what the request says, how each response folds into the rooms and lists the page shows, and
// the one-line summary of a request/response pair in the inspector. No I/O here.

/** How many timeline events the page keeps per room. */
export const TIMELINE_KEPT = 100;

/** Defaults for the editable parts of the request (the JSON the person edits). */
export const DEFAULT_LISTS = {
  all: {
    ranges: [[0, 19]],
    timeline_limit: 1,
    required_state: [
      ['m.room.name', ''],
      ['m.room.avatar', ''],
      ['m.room.create', ''],
      ['m.room.member', '$ME'],
    ],
  },
};

export const EXTENSIONS = ['to_device', 'e2ee', 'account_data', 'receipts', 'typing'];

/** The room subscription the page adds for the room being looked at. */
export const SELECTED_ROOM_CONFIG = { timeline_limit: 20, required_state: [['*', '*']] };

export function createState() {
  return { rooms: new Map(), lists: new Map(), toDeviceSince: undefined };
}

/**
 * The request body for this connection. `lists` and `roomSubscriptions` are what the person
 * edited; the selected room is subscribed to on top; `extensions` maps a name to on/off.
 */
export function buildRequest({ connId, lists, roomSubscriptions, extensions, selectedRoom, toDeviceSince }) {
  const subscriptions = { ...roomSubscriptions };
  if (selectedRoom && !subscriptions[selectedRoom]) subscriptions[selectedRoom] = SELECTED_ROOM_CONFIG;
  const ext = {};
  for (const name of EXTENSIONS) {
    if (!extensions[name]) continue;
    ext[name] = { enabled: true };
    if (name === 'to_device' && toDeviceSince) ext.to_device.since = toDeviceSince;
    if (name === 'account_data' || name === 'receipts' || name === 'typing') {
      ext[name].lists = ['*'];
      ext[name].rooms = ['*'];
    }
  }
  return { conn_id: connId, lists, room_subscriptions: subscriptions, extensions: ext };
}

/**
 * Checks the edited lists or subscriptions JSON: an object of objects. Returns the value or
 * throws an Error saying what is wrong, for the page to show next to the field.
 */
export function parseEditedObject(text, what) {
  let value;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new Error(`${what}: not JSON (${err.message})`);
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error(`${what}: must be a JSON object`);
  for (const [key, entry] of Object.entries(value)) {
    if (typeof entry !== 'object' || entry === null || Array.isArray(entry)) throw new Error(`${what}: "${key}" must be an object`);
  }
  return value;
}

const stateKey = (event) => `${event.type}\u0000${event.state_key}`;

/** One room's update folded into what the page knew of it. */
export function mergeRoom(previous, update) {
  const base = update.initial || !previous ? { timeline: [], state: new Map() } : previous;
  const room = { ...base, state: new Map(base.state) };
  for (const field of [
    'name',
    'avatar',
    'heroes',
    'is_dm',
    'joined_count',
    'invited_count',
    'notification_count',
    'highlight_count',
    'bump_stamp',
    'invite_state',
    'prev_batch',
    'num_live',
  ]) {
    if (update[field] !== undefined) room[field] = update[field];
  }
  for (const event of update.required_state ?? []) room.state.set(stateKey(event), event);
  if (update.timeline) {
    // An expanded timeline (a raised timeline_limit) is sent whole, like a limited one.
    const kept = update.initial || update.limited || update.unstable_expanded_timeline ? [] : base.timeline;
    room.timeline = [...kept, ...update.timeline].slice(-TIMELINE_KEPT);
    for (const event of update.timeline) if (typeof event.state_key === 'string') room.state.set(stateKey(event), event);
  }
  return room;
}

/** Applies one list's ops (MSC4186 sends a SYNC per range; the MSC3575 kinds are handled too). */
export function applyListOps(previousIds, ops) {
  // A response with SYNC ops describes every window the request asked for: start afresh, so a
  // window that shrank or moved leaves nothing stale behind.
  const ids = ops.some((op) => op.op === 'SYNC') ? [] : [...previousIds];
  for (const op of ops) {
    if (op.op === 'SYNC') {
      const [start] = op.range;
      (op.room_ids ?? []).forEach((id, i) => {
        ids[start + i] = id;
      });
    } else if (op.op === 'INVALIDATE') {
      const [start, end] = op.range;
      for (let i = start; i <= end && i < ids.length; i++) ids[i] = undefined;
    } else if (op.op === 'DELETE') {
      ids.splice(op.index, 1);
    } else if (op.op === 'INSERT') {
      ids.splice(op.index, 0, op.room_id);
    }
  }
  return ids;
}

/** Folds a whole response into the state (mutates it) and returns it. */
export function applyResponse(state, response) {
  for (const [roomId, update] of Object.entries(response.rooms ?? {})) {
    state.rooms.set(roomId, mergeRoom(state.rooms.get(roomId), update));
  }
  for (const [name, list] of Object.entries(response.lists ?? {})) {
    const previous = state.lists.get(name);
    const ids = list.ops ? applyListOps(previous?.ids ?? [], list.ops) : (previous?.ids ?? []);
    state.lists.set(name, { count: list.count, ids });
  }
  const toDevice = response.extensions?.to_device;
  if (toDevice?.next_batch) state.toDeviceSince = toDevice.next_batch;
  return state;
}

/** Drops lists the request no longer has, so the page shows only what it asks for. */
export function keepLists(state, names) {
  for (const name of [...state.lists.keys()]) if (!names.includes(name)) state.lists.delete(name);
}

/**
 * A list's rooms in the order the proxy gave, with their positions. A list the response gave
 * no ops for is shown, as a client that ignores ops would, in bump_stamp order.
 */
export function listRooms(state, name) {
  const list = state.lists.get(name);
  if (list?.ids.length) {
    return list.ids.flatMap((id, index) => (id ? [{ index, roomId: id, room: state.rooms.get(id) }] : []));
  }
  return [...state.rooms.entries()]
    .sort(([, a], [, b]) => (b.bump_stamp ?? 0) - (a.bump_stamp ?? 0))
    .map(([roomId, room], index) => ({ index, roomId, room }));
}

/** What a client would call the room: its name, else its heroes, else its id. */
export function roomDisplayName(roomId, room) {
  if (room?.name) return room.name;
  const heroes = (room?.heroes ?? []).map((h) => h.displayname || h.user_id).filter(Boolean);
  if (heroes.length) return heroes.join(', ');
  const inviteName = (room?.invite_state ?? []).find((e) => e.type === 'm.room.name')?.content?.name;
  return typeof inviteName === 'string' && inviteName ? inviteName : roomId;
}

/**
 * JSON for the editors: indented, but with short arrays of plain values (ranges,
 * required_state pairs) kept on one line, so a list's settings fit on a screen.
 */
export function formatJson(value, indent = '') {
  if (value === null || typeof value !== 'object') return JSON.stringify(value);
  const inline = JSON.stringify(value);
  if (Array.isArray(value) && inline.length <= 60 && !inline.includes('{')) return inline;
  const inner = `${indent}  `;
  const entries = Array.isArray(value)
    ? value.map((v) => `${inner}${formatJson(v, inner)}`)
    : Object.entries(value).map(([k, v]) => `${inner}${JSON.stringify(k)}: ${formatJson(v, inner)}`);
  if (!entries.length) return inline;
  const [open, close] = Array.isArray(value) ? ['[', ']'] : ['{', '}'];
  return `${open}\n${entries.join(',\n')}\n${indent}${close}`;
}

export function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

/** The inspector's one line about an exchange: positions, timing, size, ops and rooms. */
export function summarizeExchange({ pos, status, ms, bytes, response }) {
  const parts = [`${pos ?? '(none)'} → ${response?.pos ?? '—'}`, `${status}`, `${Math.round(ms)} ms`, formatBytes(bytes)];
  const ops = {};
  for (const list of Object.values(response?.lists ?? {})) for (const op of list.ops ?? []) ops[op.op] = (ops[op.op] ?? 0) + 1;
  const opText = Object.entries(ops)
    .map(([op, n]) => `${op}×${n}`)
    .join(' ');
  if (opText) parts.push(`ops ${opText}`);
  const rooms = Object.keys(response?.rooms ?? {}).length;
  if (response) parts.push(`${rooms} room${rooms === 1 ? '' : 's'}`);
  if (response?.errcode) parts.push(response.errcode);
  return parts.join(' · ');
}

/** The text a timeline line shows for an event; never markup. */
export function eventText(event) {
  const content = event.content ?? {};
  if (event.type === 'm.room.message' && typeof content.body === 'string') return content.body;
  if (event.type === 'm.room.member') return `${content.membership ?? '?'} ${event.state_key ?? ''}`.trim();
  if (event.type === 'm.room.name') return `name: ${content.name ?? ''}`;
  if (event.type === 'm.room.encrypted') return '(encrypted)';
  return event.type;
}
