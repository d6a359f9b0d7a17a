// Builds room results for the rooms a response sends: from scratch (initial), as the delta
// since the position the connection sent the room up to, or expanded (timeline_limit or
// required_state grew). Reads are batched over rooms; events go out as their stored JSON.
import type { RoomMetaCache } from '../cache/room-meta-cache.js';
import type { RoomStates } from '../cache/room-states.js';
import type { RoomTimelines } from '../cache/room-timelines.js';
import type { UserCache, UserRoom } from '../cache/user-cache.js';
import type { VisibilityHistories } from '../cache/visibility-histories.js';
import type { Pool } from '../store/db.js';
import {
  currentMembers,
  currentState,
  HISTORY_START,
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
import { historyWanted, type TimelineHistory } from './history.js';
import { RawJson } from './json.js';
import type { RoomRules } from './protocol.js';
import { excludes, type StateConfig, toSelector, wants } from './required-state.js';
import { timelineWindow } from './timeline-window.js';
import type { RoomResult } from './types.js';
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
  /** The request's protocol's metadata rules (see protocol.ts). */
  rules: RoomRules;
  /** History before rooms' stored timelines, fetched where a timeline asks for more (see history.ts). */
  history?: TimelineHistory;
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
  // A live delta is usually one room: no workers to set up for it.
  if (items.length <= 1) return items.length ? [await fn(items[0] as T)] : [];
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
  // Placing fetched history may rewrite stored state events (the timeline's fuller copy): read again then.
  const grew = await deepenTimelines(ctx, eventPlans, views, timelines);
  const state = await loadState(ctx, eventPlans, timelines, grew ? await loadScratchState(ctx, eventPlans) : scratchState);
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
        // Backfilled history sits below every stream position (negative): only ever from scratch.
        after: fromScratch ? HISTORY_START : (p.sent?.pos ?? 0),
        upTo: view.upTo,
        limit: p.timelineLimit,
        visible: view.visible,
      };
    });
  return ctx.timelines ? ctx.timelines.latest(queries) : latestTimelines(ctx.pool, queries);
}

/** Rooms sent from scratch whose timeline stops at the stored history's start get it fetched, then read again. */
async function deepenTimelines(
  ctx: BuildContext,
  plans: RoomPlan[],
  views: Map<string, RoomView>,
  timelines: Map<string, TimelineRow[]>,
): Promise<boolean> {
  if (!ctx.history) return false;
  const wants = plans.flatMap((p) => {
    const want =
      p.timelineLimit > 0 && (p.initial || p.expandTimeline) && historyWanted(p.roomId, timelines.get(p.roomId) ?? [], p.timelineLimit);
    return want ? [want] : [];
  });
  if (wants.length === 0) return false;
  const { grown, complete } = await ctx.history.fetch(wants);
  const again = plans.filter((p) => grown.has(p.roomId));
  if (again.length) {
    // The history may carry the user's own membership changes: what they may see is decided again.
    for (const [roomId, view] of await loadViews(ctx, again)) views.set(roomId, view);
    for (const [roomId, rows] of await loadTimelines(ctx, again, views)) timelines.set(roomId, rows);
  }
  // Nothing older that this user may see: their timeline is not limited by that gap.
  for (const roomId of complete) {
    const rows = timelines.get(roomId) ?? [];
    const oldest = rows.at(-1);
    if (oldest?.gapBefore) timelines.set(roomId, [...rows.slice(0, -1), { ...oldest, gapBefore: false }]);
  }
  return again.length > 0;
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
    notification_count: 0,
    highlight_count: 0,
  };
  if (dm) result.is_dm = true;
  ctx.rules.invite(ctx, plan, room, result);
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
  await ctx.rules.metadata(ctx, { plan, room, meta, result, sent, fromScratch });
  return { result: fromScratch || hasContent(result) ? result : undefined, sent };
}

/** unsigned.transaction_id goes back only to the device that sent the event. */
function withTxnId(row: TimelineRow, txnIds: Map<string, string>): RawJson {
  if (txnIds.size === 0) return new RawJson(row.json);
  const event = JSON.parse(row.json) as { event_id: string; unsigned?: Record<string, unknown> };
  const txnId = txnIds.get(event.event_id);
  if (!txnId) return new RawJson(row.json);
  return new RawJson(JSON.stringify({ ...event, unsigned: { ...event.unsigned, transaction_id: txnId } }));
}
