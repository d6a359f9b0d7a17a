// Builders of v2 /sync JSON for tests, in the exact wire shape of
// https://spec.matrix.org/v1.12/client-server-api/#get_matrixclientv3sync
// Ids and timestamps come from one counter so that a test's output is the same on every run.

import type { SyncRequest } from '../../src/sync/types.js';

export type JsonObject = Record<string, unknown>;

/** A room event as /sync delivers it (the sync format carries no room_id). */
export interface ClientEvent {
  type: string;
  content: JsonObject;
  sender: string;
  event_id: string;
  origin_server_ts: number;
  state_key?: string;
  unsigned?: JsonObject;
}

/** State of an invited or knocked room: no id, no timestamp. */
export interface StrippedEvent {
  type: string;
  state_key: string;
  sender: string;
  content: JsonObject;
}

/** Account data, ephemeral and to-device events: just a type and content (to-device adds a sender). */
export interface BasicEvent {
  type: string;
  content: JsonObject;
  sender?: string;
}

export interface EventOpts {
  sender?: string;
  stateKey?: string;
  eventId?: string;
  ts?: number;
  unsigned?: JsonObject;
}

export const DEFAULT_SENDER = '@alice:fake';
export const BASE_TS = 1_700_000_000_000;

let counter = 0;

/** Restart ids and timestamps at $ev1:fake, for tests that compare whole responses. */
export function resetBuilders(): void {
  counter = 0;
}

export function event(type: string, content: JsonObject, opts: EventOpts = {}): ClientEvent {
  counter++;
  const ev: ClientEvent = {
    type,
    content,
    sender: opts.sender ?? DEFAULT_SENDER,
    event_id: opts.eventId ?? `$ev${counter}:fake`,
    origin_server_ts: opts.ts ?? BASE_TS + counter * 1000,
  };
  if (opts.stateKey !== undefined) ev.state_key = opts.stateKey;
  if (opts.unsigned !== undefined) ev.unsigned = opts.unsigned;
  return ev;
}

export function stateEvent(type: string, stateKey: string, content: JsonObject, sender: string = DEFAULT_SENDER): ClientEvent {
  return event(type, content, { sender, stateKey });
}

export function message(body: string, sender: string = DEFAULT_SENDER): ClientEvent {
  return event('m.room.message', { msgtype: 'm.text', body }, { sender });
}

export interface MemberOpts {
  /** Who sent it; defaults to the member itself (joins, leaves), set it for invites, kicks, bans. */
  sender?: string;
  displayname?: string;
  avatarUrl?: string;
  reason?: string;
  isDirect?: boolean;
  eventId?: string;
  ts?: number;
  unsigned?: JsonObject;
}

export function member(userId: string, membership: string, opts: MemberOpts = {}): ClientEvent {
  const content: JsonObject = { membership };
  if (opts.displayname !== undefined) content.displayname = opts.displayname;
  if (opts.avatarUrl !== undefined) content.avatar_url = opts.avatarUrl;
  if (opts.reason !== undefined) content.reason = opts.reason;
  if (opts.isDirect !== undefined) content.is_direct = opts.isDirect;
  return event('m.room.member', content, {
    sender: opts.sender ?? userId,
    stateKey: userId,
    eventId: opts.eventId,
    ts: opts.ts,
    unsigned: opts.unsigned,
  });
}

/** Drops what stripped state does not carry, e.g. to turn createRoomState into invite_state. */
export function stripped(ev: ClientEvent): StrippedEvent {
  return { type: ev.type, state_key: ev.state_key ?? '', sender: ev.sender, content: ev.content };
}

export interface RoomOpts {
  name?: string;
  encrypted?: boolean;
  /** m.room.create type, e.g. 'm.space'. */
  type?: string;
  /** Users besides the creator who have joined. */
  joined?: string[];
  joinRule?: string;
  historyVisibility?: string;
}

/**
 * The state of a freshly created room, in the order a homeserver creates it. The room id is
 * taken for symmetry with syncResponse's maps; room version 10 events do not contain it.
 */
export function createRoomState(_roomId: string, creator: string, opts: RoomOpts = {}): ClientEvent[] {
  const create: JsonObject = { creator, room_version: '10' };
  if (opts.type !== undefined) create.type = opts.type;
  const events = [
    stateEvent('m.room.create', '', create, creator),
    member(creator, 'join'),
    stateEvent(
      'm.room.power_levels',
      '',
      {
        users: { [creator]: 100 },
        users_default: 0,
        events: { 'm.room.name': 50, 'm.room.power_levels': 100, 'm.room.history_visibility': 100, 'm.room.encryption': 100 },
        events_default: 0,
        state_default: 50,
        ban: 50,
        kick: 50,
        redact: 50,
        invite: 0,
      },
      creator,
    ),
    stateEvent('m.room.join_rules', '', { join_rule: opts.joinRule ?? 'invite' }, creator),
    stateEvent('m.room.history_visibility', '', { history_visibility: opts.historyVisibility ?? 'shared' }, creator),
  ];
  if (opts.name !== undefined) events.push(stateEvent('m.room.name', '', { name: opts.name }, creator));
  if (opts.encrypted) events.push(stateEvent('m.room.encryption', '', { algorithm: 'm.megolm.v1.aes-sha2' }, creator));
  for (const userId of opts.joined ?? []) events.push(member(userId, 'join'));
  return events;
}

export interface RoomInput {
  state?: ClientEvent[];
  timeline?: ClientEvent[];
  limited?: boolean;
  prevBatch?: string;
  ephemeral?: BasicEvent[];
  accountData?: BasicEvent[];
  unread?: { notification_count: number; highlight_count: number };
  summary?: { heroes?: string[]; joinedCount?: number; invitedCount?: number };
}

export interface SyncInput {
  join?: Record<string, RoomInput>;
  invite?: Record<string, StrippedEvent[]>;
  knock?: Record<string, StrippedEvent[]>;
  leave?: Record<string, RoomInput>;
  accountData?: BasicEvent[];
  presence?: BasicEvent[];
  toDevice?: BasicEvent[];
  deviceLists?: { changed?: string[]; left?: string[] };
  otkCounts?: Record<string, number>;
  fallbackKeyTypes?: string[];
  /** Left out by default so that the fake homeserver numbers the response. */
  nextBatch?: string;
}

function roomJson(room: RoomInput): JsonObject {
  const timeline: JsonObject = { events: room.timeline ?? [], limited: room.limited ?? false };
  if (room.prevBatch !== undefined) timeline.prev_batch = room.prevBatch;
  const out: JsonObject = { state: { events: room.state ?? [] }, timeline };
  if (room.ephemeral) out.ephemeral = { events: room.ephemeral };
  if (room.accountData) out.account_data = { events: room.accountData };
  if (room.unread) out.unread_notifications = room.unread;
  if (room.summary) {
    const summary: JsonObject = {};
    if (room.summary.heroes) summary['m.heroes'] = room.summary.heroes;
    if (room.summary.joinedCount !== undefined) summary['m.joined_member_count'] = room.summary.joinedCount;
    if (room.summary.invitedCount !== undefined) summary['m.invited_member_count'] = room.summary.invitedCount;
    out.summary = summary;
  }
  return out;
}

function mapValues<T>(input: Record<string, T>, f: (v: T) => unknown): JsonObject {
  return Object.fromEntries(Object.entries(input).map(([k, v]) => [k, f(v)]));
}

/** A v2 /sync body; sections not given are left out, as homeservers do for empty ones. */
export function syncResponse(input: SyncInput = {}): JsonObject {
  const out: JsonObject = {};
  if (input.join || input.invite || input.knock || input.leave) {
    const rooms: JsonObject = {};
    if (input.join) rooms.join = mapValues(input.join, roomJson);
    if (input.invite) rooms.invite = mapValues(input.invite, (events) => ({ invite_state: { events } }));
    if (input.knock) rooms.knock = mapValues(input.knock, (events) => ({ knock_state: { events } }));
    if (input.leave) rooms.leave = mapValues(input.leave, roomJson);
    out.rooms = rooms;
  }
  if (input.accountData) out.account_data = { events: input.accountData };
  if (input.presence) out.presence = { events: input.presence };
  if (input.toDevice) out.to_device = { events: input.toDevice };
  if (input.deviceLists) out.device_lists = { changed: input.deviceLists.changed ?? [], left: input.deviceLists.left ?? [] };
  if (input.otkCounts) out.device_one_time_keys_count = input.otkCounts;
  if (input.fallbackKeyTypes) out.device_unused_fallback_key_types = input.fallbackKeyTypes;
  if (input.nextBatch !== undefined) out.next_batch = input.nextBatch;
  return out;
}

/**
 * An engine request as the MSC4186 adapter makes it: one list of the ten most recent rooms,
 * for tests that drive `SyncEngine.sync` directly.
 */
export function engineRequest(pos: string | undefined, timeoutMs = 0, connId = 'main', timelineLimit = 1): SyncRequest {
  return {
    protocol: 'msc4186',
    connId,
    pos,
    timeoutMs,
    lists: new Map([['all', { ranges: [[0, 9]], timelineLimit, requiredState: [], filters: {} }]]),
    roomSubscriptions: new Map(),
    unsubscribeRooms: [],
    extensions: {},
  } as SyncRequest;
}
