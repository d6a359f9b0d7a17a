// Builds room results for the rooms a response sends: from scratch (initial), as the delta
// since the position the connection sent the room up to, or expanded (timeline_limit or
// required_state grew). Reads are batched over rooms; events go out as their stored JSON.
import type { RoomMeta, RoomMetaCache } from '../cache/room-meta-cache.js';
import type { RoomStates } from '../cache/room-states.js';
import type { RoomTimelines } from '../cache/room-timelines.js';
import type { UserCache, UserRoom } from '../cache/user-cache.js';
import type { VisibilityHistories } from '../cache/visibility-histories.js';
import type { Pool } from '../store/db.js';
import {
  currentMembers,
  currentState,
  fallbackHeroes,
  latestEventsOfTypes,
  latestTimelines,
  memberEvents,
  prevBatchFrom,
  type StateRow,
  type StateSelector,
  stateAsOf,
  stateChangedBetween,
  type TimelineRow,
  transactionIdsFor,
  visibilityHistory,
} from '../store/room-reads.js';
import type { RoomSent } from './connections.js';
import { RawJson } from './json.js';
import { excludes, type StateConfig, toSelector, wants } from './required-state.js';
import { strippedNameAndAvatar } from './stripped-state.js';
import { timelineWindow } from './timeline-window.js';
import type { Protocol, RoomResult } from './types.js';
import { type RoomView, roomView, viewEnd } from './visibility.js';

export interface RoomPlan {
  roomId: string;
  timelineLimit: number;
  state: StateConfig;
  /** stateConfigKey(state) */
  stateKey: string;
  sent: RoomSent | undefined;
  /** Send from scratch (never sent, newly joined, or membership changed). */
  initial: boolean;
  expandTimeline: boolean;
  expandState: boolean;
  /** MSC3575 include_heroes. */
  includeHeroes: boolean;
}

export interface BuildContext {
  pool: Pool;
  userId: string;
  deviceId: string;
  user: UserCache;
  metas: RoomMetaCache;
  /** Stream position the response is computed at. */
  upTo: number;
  /** Stream position of the confirmed response (0 on a new connection). */
  from: number;
  /** Which protocol's room fields to fill in (MSC3575 names are calculated, see user.names). */
  protocol: Protocol;
  /** MSC3575 `timestamp` per room. */
  timestamps: Map<string, number>;
  /** Shared in-memory reads (absent: every read goes to the store). */
  histories?: VisibilityHistories;
  timelines?: RoomTimelines;
  states?: RoomStates;
  /** The exact pagination token from just before an event no v2 chunk started at, if it can be had. */
  exactPrevBatch?: (roomId: string, event: { nid: number; eventId: string }) => Promise<string | undefined>;
}

export interface BuiltRoom {
  result: RoomResult | undefined;
  sent: RoomSent;
}

const MEMBER = 'm.room.member';

/**
 * Per-room lookups (rare ones: a prev_batch, heroes, a left room's state) of a window run a few
 * at a time rather than one after another, without one big window taking the whole pool.
 */
const PER_ROOM_CONCURRENCY = 8;

async function mapConcurrent<T, R>(items: readonly T[], fn: (item: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(PER_ROOM_CONCURRENCY, items.length) }, worker));
  return out;
}

/** Where a room's data stops: now for joined rooms, at the membership event otherwise. */
function roomUpTo(ctx: BuildContext, room: UserRoom): number {
  return viewEnd(room, ctx.upTo);
}

const hasContent = (r: RoomResult) =>
  Boolean(
    r.initial ||
      r.name !== undefined ||
      r.avatar !== undefined ||
      r.heroes ||
      r.joined_count !== undefined ||
      r.invited_count !== undefined ||
      r.required_state?.length ||
      r.timeline?.length ||
      r.invite_state ||
      r.notification_count !== undefined ||
      r.highlight_count !== undefined,
  );

export async function buildRooms(ctx: BuildContext, plans: RoomPlan[]): Promise<Map<string, BuiltRoom>> {
  const out = new Map<string, BuiltRoom>();
  const eventPlans: RoomPlan[] = [];
  for (const plan of plans) {
    const room = ctx.user.rooms.get(plan.roomId);
    if (!room) continue;
    if (room.membership === 'invite' || room.membership === 'knock') out.set(plan.roomId, buildInvite(ctx, plan, room));
    else eventPlans.push(plan);
  }
  // Independent reads run concurrently: timelines with the from-scratch state, then the
  // transaction ids with the lazy members, then each room's own few lookups.
  const [views, scratchState] = await Promise.all([loadViews(ctx, eventPlans), loadScratchState(ctx, eventPlans)]);
  const timelines = await loadTimelines(ctx, eventPlans, views);
  const state = await loadState(ctx, eventPlans, timelines, scratchState);
  const [txnIds, lazy] = await Promise.all([
    transactionIdsFor(
      ctx.pool,
      ctx.userId,
      ctx.deviceId,
      [...timelines.values()]
        .flat()
        .filter((r) => r.sender === ctx.userId)
        .map((r) => r.eventId),
    ),
    loadLazyMembers(ctx, eventPlans, timelines, state),
  ]);
  const built = await mapConcurrent(eventPlans, (plan) => {
    const members = lazy.get(plan.roomId);
    return buildJoinedOrLeft(
      ctx,
      plan,
      timelines.get(plan.roomId) ?? [],
      [...(state.get(plan.roomId) ?? []), ...(members?.rows ?? [])],
      members?.sent,
      txnIds,
    );
  });
  for (const [i, plan] of eventPlans.entries()) out.set(plan.roomId, built[i] as BuiltRoom);
  return out;
}

/** What the user may see of each room being sent with events (see visibility.ts). */
async function loadViews(ctx: BuildContext, plans: RoomPlan[]): Promise<Map<string, RoomView>> {
  const roomIds = plans.map((p) => p.roomId);
  const history = await (ctx.histories ? ctx.histories.get(ctx.userId, roomIds) : visibilityHistory(ctx.pool, ctx.userId, roomIds));
  return new Map(
    plans.map((p) => [
      p.roomId,
      roomView(ctx.user.rooms.get(p.roomId) as UserRoom, ctx.upTo, history.get(p.roomId) ?? { visibility: [], membership: [] }),
    ]),
  );
}

/**
 * Timelines for the rooms being sent: the delta since a room was last sent, or from scratch
 * its latest events, only ever from what the user may see. Events are shared by every user, so
 * the store holds history some of its readers never had.
 */
async function loadTimelines(ctx: BuildContext, plans: RoomPlan[], views: Map<string, RoomView>): Promise<Map<string, TimelineRow[]>> {
  const queries = plans
    .filter((p) => p.timelineLimit > 0)
    .map((p) => {
      const view = views.get(p.roomId) as RoomView;
      const fromScratch = p.initial || p.expandTimeline;
      return {
        roomId: p.roomId,
        after: fromScratch ? 0 : (p.sent?.pos ?? 0),
        upTo: view.upTo,
        limit: p.timelineLimit,
        visible: view.visible,
      };
    });
  return ctx.timelines ? ctx.timelines.latest(queries) : latestTimelines(ctx.pool, queries);
}

/**
 * $LAZY: the members of the returned timeline's senders and member-event targets that this
 * connection has not sent yet; for joined rooms in one query across rooms.
 */
async function loadLazyMembers(
  ctx: BuildContext,
  plans: RoomPlan[],
  timelines: Map<string, TimelineRow[]>,
  state: Map<string, StateRow[]>,
) {
  const out = new Map<string, { rows: StateRow[]; sent: Set<string> }>();
  const joinedPairs: { roomId: string; userId: string }[] = [];
  // Rooms' own lookups (rare: a member changed since last sent, or a room left) run concurrently.
  const perRoom = await mapConcurrent(plans, async (plan) => {
    if (!plan.state.lazyMembers) return undefined;
    const room = ctx.user.rooms.get(plan.roomId) as UserRoom;
    const sent = new Set(plan.initial ? [] : (plan.sent?.lazy ?? []));
    // A member whose membership event changed since the room was last sent is owed again.
    if (!plan.initial && plan.sent && (ctx.metas.get(plan.roomId)?.statePos ?? 0) > plan.sent.pos) {
      const members: StateSelector = { all: false, types: [MEMBER], keys: [], pairTypes: [], pairKeys: [] };
      for (const row of await stateChangedBetween(ctx.pool, plan.roomId, plan.sent.pos, roomUpTo(ctx, room), members))
        sent.delete(row.stateKey);
    }
    const wanted = new Set<string>();
    for (const r of (timelines.get(plan.roomId) ?? []).slice(0, plan.timelineLimit)) {
      wanted.add(r.sender);
      if (r.type === MEMBER && r.stateKey) wanted.add(r.stateKey);
    }
    const already = new Set((state.get(plan.roomId) ?? []).filter((s) => s.type === MEMBER).map((s) => s.stateKey));
    const missing = [...wanted].filter((u) => !sent.has(u) && !already.has(u));
    for (const u of wanted) sent.add(u);
    const entry = { rows: [] as StateRow[], sent };
    if (room.membership !== 'join') entry.rows = await memberEvents(ctx.pool, plan.roomId, missing, roomUpTo(ctx, room));
    return { plan, room, entry, missing };
  });
  for (const r of perRoom) {
    if (!r) continue;
    out.set(r.plan.roomId, r.entry);
    if (r.room.membership === 'join') for (const userId of r.missing) joinedPairs.push({ roomId: r.plan.roomId, userId });
  }
  const members = ctx.states ? await ctx.states.members(joinedPairs) : await currentMembers(ctx.pool, joinedPairs);
  for (const row of members) out.get(row.roomId)?.rows.push(row);
  return out;
}

/**
 * Batched state loads: joined rooms sharing a config in one query; left rooms as of their leave;
 * deltas as the keys changed since the room was last sent. With $LAZY and a timeline that is
 * not limited, a delta also carries every membership change, so clients' member lists stay
 * right (with a limited one they must drop their member cache anyway).
 */
/** Joined rooms sent from scratch: one query per required_state config across rooms. */
async function loadScratchState(ctx: BuildContext, plans: RoomPlan[]): Promise<StateRow[][]> {
  const groups = new Map<string, { cfg: StateConfig; roomIds: string[] }>();
  for (const plan of plans) {
    const room = ctx.user.rooms.get(plan.roomId) as UserRoom;
    if ((plan.initial || plan.expandState) && room.membership === 'join') {
      const g = groups.get(plan.stateKey) ?? { cfg: plan.state, roomIds: [] };
      groups.set(plan.stateKey, g);
      g.roomIds.push(plan.roomId);
    }
  }
  return Promise.all(
    [...groups.values()].map((g) =>
      ctx.states ? ctx.states.current(g.roomIds, toSelector(g.cfg)) : currentState(ctx.pool, g.roomIds, toSelector(g.cfg)),
    ),
  );
}

async function loadState(
  ctx: BuildContext,
  plans: RoomPlan[],
  timelines: Map<string, TimelineRow[]>,
  scratch: StateRow[][],
): Promise<Map<string, StateRow[]>> {
  const out = new Map<string, StateRow[]>();
  const add = (rows: StateRow[]) => {
    for (const r of rows) {
      const list = out.get(r.roomId) ?? [];
      out.set(r.roomId, list);
      list.push(r);
    }
  };
  const perRoom: (() => Promise<StateRow[]>)[] = [];
  for (const plan of plans) {
    const room = ctx.user.rooms.get(plan.roomId) as UserRoom;
    const fromScratch = plan.initial || plan.expandState;
    if (fromScratch && room.membership === 'join') {
      // loaded by loadScratchState
    } else if (fromScratch) {
      perRoom.push(() => stateAsOf(ctx.pool, plan.roomId, roomUpTo(ctx, room), toSelector(plan.state)));
    } else if ((ctx.metas.get(plan.roomId)?.statePos ?? 0) > (plan.sent?.pos ?? 0)) {
      const limited = (timelines.get(plan.roomId)?.length ?? 0) > plan.timelineLimit;
      const selector = toSelector(plan.state);
      if (plan.state.lazyMembers && !limited) selector.types.push(MEMBER);
      perRoom.push(() => stateChangedBetween(ctx.pool, plan.roomId, plan.sent?.pos ?? 0, roomUpTo(ctx, room), selector));
    }
  }
  // Each room's rows come from one query, so running them concurrently keeps every room's order.
  for (const rows of await mapConcurrent(perRoom, (load) => load())) add(rows);
  for (const rows of scratch) add(rows);
  return out;
}

function buildInvite(ctx: BuildContext, plan: RoomPlan, room: UserRoom): BuiltRoom {
  const sent: RoomSent = { pos: ctx.upTo, tl: plan.timelineLimit, rs: plan.stateKey, m: room.membership };
  const fresh = plan.initial || plan.sent?.m !== room.membership;
  const dm = ctx.user.dmRooms.has(plan.roomId);
  sent.dm = dm;
  if (!fresh) return { result: undefined, sent: { ...plan.sent, ...sent } };
  const result: RoomResult = {
    initial: true,
    invite_state: new RawJson(room.inviteState ?? '[]'),
    bump_stamp: room.membershipPos,
    notification_count: 0,
    highlight_count: 0,
  };
  if (dm) result.is_dm = true;
  if (ctx.protocol === 'msc4186') {
    // As Synapse: the invite shows with its room's name and avatar (no heroes: Synapse has no
    // member summary for a room the user is not in).
    const { name, avatar } = strippedNameAndAvatar(room.inviteState);
    if (name !== undefined) result.name = name;
    if (avatar !== undefined) result.avatar = avatar;
  }
  if (ctx.protocol === 'msc3575') {
    // The Go proxy counts an invite as a highlight, so by_notification_level puts it on top.
    Object.assign(result, { bump_stamp: undefined, highlight_count: 1, timestamp: ctx.timestamps.get(plan.roomId) });
    result.name = ctx.user.names.get(plan.roomId)?.name;
  }
  return { result, sent };
}

async function buildJoinedOrLeft(
  ctx: BuildContext,
  plan: RoomPlan,
  rows: TimelineRow[],
  stateRows: StateRow[],
  lazySent: Set<string> | undefined,
  txnIds: Map<string, string>,
): Promise<BuiltRoom> {
  const room = ctx.user.rooms.get(plan.roomId) as UserRoom;
  const meta = ctx.metas.get(plan.roomId);
  const fromScratch = plan.initial;
  const result: RoomResult = {};
  if (fromScratch) result.initial = true;

  // Timeline: newest first from the store, oldest first on the wire, never across a gap.
  const { events: returned, limited } = timelineWindow(rows, plan.timelineLimit);
  if (plan.timelineLimit > 0) {
    result.timeline = returned.map((r) => withTxnId(r, txnIds));
    const oldest = returned[0];
    result.limited = limited;
    if (oldest) {
      // The homeserver's exact token (a round trip) only when the client will paginate from it;
      // a live delta continues what the client has.
      const paginated = fromScratch || result.limited;
      const token =
        oldest.prevBatch ??
        (paginated ? await ctx.exactPrevBatch?.(plan.roomId, oldest) : undefined) ??
        (await prevBatchFrom(ctx.pool, plan.roomId, oldest.nid));
      if (token) result.prev_batch = token;
    }
    result.num_live = ctx.from > 0 ? returned.filter((r) => r.nid > ctx.from).length : 0;
    if (plan.expandTimeline && !fromScratch) result.unstable_expanded_timeline = true;
  }

  // required_state (lazily loaded members were added by the caller and are always wanted,
  // whatever the object form's `exclude` says).
  const lazyMember = (s: StateRow) =>
    plan.state.lazyMembers && s.type === MEMBER && (!excludes(plan.state, MEMBER, s.stateKey) || (lazySent?.has(s.stateKey) ?? false));
  const required = stateRows.filter((s) => wants(plan.state, s.type, s.stateKey) || lazyMember(s));
  if (required.length) result.required_state = required.map((s) => new RawJson(s.json));

  const sent: RoomSent = {
    ...plan.sent,
    pos: roomUpTo(ctx, room),
    tl: plan.timelineLimit,
    rs: plan.stateKey,
    m: room.membership,
  };
  if (lazySent) sent.lazy = [...lazySent];
  if (ctx.protocol === 'msc3575') await addMetadata3575(ctx, plan, room, meta, result, sent, fromScratch);
  else await addMetadata(ctx, plan, room, meta, result, sent, fromScratch);
  return { result: fromScratch || hasContent(result) ? result : undefined, sent };
}

/** Name, avatar, heroes, counts: all of them from scratch, otherwise only what changed. */
async function addMetadata(
  ctx: BuildContext,
  plan: RoomPlan,
  room: UserRoom,
  meta: RoomMeta | undefined,
  result: RoomResult,
  sent: RoomSent,
  fromScratch: boolean,
) {
  const changed = <T>(now: T | undefined, before: T | undefined) => (fromScratch ? now !== undefined : now !== undefined && now !== before);
  const joined = room.membership === 'join';
  // A room the user left or was banned from shows its name as it was then, not any rename since.
  const { name, avatar } = joined
    ? { name: meta?.name, avatar: meta?.avatar }
    : await nameAndAvatarAsOf(ctx, plan.roomId, roomUpTo(ctx, room));
  if (changed(name, plan.sent?.name)) result.name = name;
  if (changed(avatar, plan.sent?.avatar)) result.avatar = avatar;
  sent.name = name;
  sent.avatar = avatar;
  if (joined) {
    if (changed(meta?.joinedCount, plan.sent?.jc)) result.joined_count = meta?.joinedCount;
    if (changed(meta?.invitedCount, plan.sent?.ic)) result.invited_count = meta?.invitedCount;
    sent.jc = meta?.joinedCount;
    sent.ic = meta?.invitedCount;
    if (!meta?.name && (fromScratch || result.joined_count !== undefined || result.invited_count !== undefined)) {
      const heroes = await heroesOf(ctx, plan.roomId, room);
      if (heroes.length) result.heroes = heroes;
    }
  }
  // Real counts from the homeserver's v2 unread_notifications (Synapse's own endpoint sends 0),
  // sent from scratch and whenever they change (a read elsewhere clears them with no new event).
  if (fromScratch || room.notificationCount !== plan.sent?.nc || room.highlightCount !== plan.sent?.hc) {
    result.notification_count = room.notificationCount;
    result.highlight_count = room.highlightCount;
  }
  const dm = ctx.user.dmRooms.has(plan.roomId);
  if (dm) result.is_dm = true;
  sent.dm = dm;
  result.bump_stamp = joined ? meta?.bumpNid || meta?.latestNid || room.membershipPos : room.membershipPos;
}

/**
 * MSC3575's metadata: the calculated name, the avatar (a DM's other member's when the room has
 * none; null once removed), heroes only on request, counts always, and `timestamp`.
 */
async function addMetadata3575(
  ctx: BuildContext,
  plan: RoomPlan,
  room: UserRoom,
  meta: RoomMeta | undefined,
  result: RoomResult,
  sent: RoomSent,
  fromScratch: boolean,
) {
  const named = ctx.user.names.get(plan.roomId);
  const dm = ctx.user.dmRooms.has(plan.roomId);
  const heroes = named?.heroes ?? [];
  const name = named?.name;
  if (name !== undefined && (fromScratch || name !== plan.sent?.name)) result.name = name;
  sent.name = name;
  // A room the user left or was banned from: its avatar then, as its name (see names.ts).
  const roomAvatar = room.membership === 'join' ? meta?.avatar : (await nameAndAvatarAsOf(ctx, plan.roomId, roomUpTo(ctx, room))).avatar;
  const avatar = roomAvatar ?? (dm && heroes.length === 1 ? heroes[0]?.avatarUrl : undefined);
  if (fromScratch ? avatar !== undefined : avatar !== plan.sent?.avatar) result.avatar = avatar ?? null;
  sent.avatar = avatar;
  const calculated = room.membership === 'join' ? !meta?.name && !meta?.canonicalAlias : heroes.length > 0;
  if (plan.includeHeroes && calculated && heroes.length && (fromScratch || result.name !== undefined)) {
    result.heroes = heroes.map((h) => ({ user_id: h.userId, displayname: h.displayname, avatar_url: h.avatarUrl }));
  }
  if (room.membership === 'join') {
    if (meta?.joinedCount && (fromScratch || meta.joinedCount !== plan.sent?.jc)) result.joined_count = meta.joinedCount;
    if (meta?.invitedCount !== undefined && (fromScratch || meta.invitedCount !== plan.sent?.ic)) result.invited_count = meta.invitedCount;
    sent.jc = meta?.joinedCount;
    sent.ic = meta?.invitedCount;
  }
  result.notification_count = room.notificationCount;
  result.highlight_count = room.highlightCount;
  if (dm) result.is_dm = true;
  sent.dm = dm;
  // The bump timestamps are the room's now; a room the user is out of stops at the leave.
  result.timestamp =
    room.membership === 'join'
      ? ctx.timestamps.get(plan.roomId)
      : (await latestEventsOfTypes(ctx.pool, [plan.roomId], [], roomUpTo(ctx, room)))[0]?.ts;
}

const NAME_AND_AVATAR: StateSelector = { all: false, types: [], keys: [], pairTypes: ['m.room.name', 'm.room.avatar'], pairKeys: ['', ''] };

async function nameAndAvatarAsOf(ctx: BuildContext, roomId: string, pos: number): Promise<{ name?: string; avatar?: string }> {
  const out: { name?: string; avatar?: string } = {};
  for (const row of await stateAsOf(ctx.pool, roomId, pos, NAME_AND_AVATAR)) {
    const content = (JSON.parse(row.json) as { content?: Record<string, unknown> }).content ?? {};
    if (row.type === 'm.room.name' && typeof content.name === 'string' && content.name.trim()) out.name = content.name;
    if (row.type === 'm.room.avatar' && typeof content.url === 'string' && content.url) out.avatar = content.url;
  }
  return out;
}

async function heroesOf(ctx: BuildContext, roomId: string, room: UserRoom): Promise<NonNullable<RoomResult['heroes']>> {
  let ids = (room.heroes ?? []).filter((u) => u !== ctx.userId).slice(0, 5);
  const members = ids.length ? await memberEvents(ctx.pool, roomId, ids) : await fallbackHeroes(ctx.pool, [roomId], ctx.userId, 5);
  if (ids.length === 0) ids = members.map((m) => m.stateKey);
  const byUser = new Map(members.map((m) => [m.stateKey, (JSON.parse(m.json) as { content?: Record<string, unknown> }).content ?? {}]));
  return ids.map((userId) => {
    const c = byUser.get(userId) ?? {};
    const hero: { user_id: string; displayname?: string; avatar_url?: string } = { user_id: userId };
    if (typeof c.displayname === 'string') hero.displayname = c.displayname;
    if (typeof c.avatar_url === 'string') hero.avatar_url = c.avatar_url;
    return hero;
  });
}

/** unsigned.transaction_id goes back only to the device that sent the event. */
function withTxnId(row: TimelineRow, txnIds: Map<string, string>): RawJson {
  if (txnIds.size === 0) return new RawJson(row.json);
  const event = JSON.parse(row.json) as { event_id: string; unsigned?: Record<string, unknown> };
  const txnId = txnIds.get(event.event_id);
  if (!txnId) return new RawJson(row.json);
  return new RawJson(JSON.stringify({ ...event, unsigned: { ...event.unsigned, transaction_id: txnId } }));
}
