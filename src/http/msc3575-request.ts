// MSC3575 (the Go proxy's sliding sync) request bodies, validated at the edge. Lists,
// extensions and room subscriptions are sticky, so every field may be absent (or null: the
// Go proxy's clients send null for "unchanged"); the engine merges them into what the
// connection remembers. Errors name the field, as for MSC4186.
import { z } from 'zod';
import { invalidParam } from '../matrix-error.js';
import type { ExtensionDelta, ExtensionName, ListDelta, RoomConfig, SortBy, StickyDelta } from '../sync/types.js';
import { bodyTimeout, dictionary } from './input-limits.js';
import { filters, LIMITS, type ParsedSync, range, requiredState, scoped, toFilters, validateSync } from './msc4186-request.js';

/** The Go proxy's default long-poll. */
const DEFAULT_TIMEOUT_MS = 10_000;

const SORTS = ['by_recency', 'by_name', 'by_notification_level', 'by_notification_count', 'by_highlight_count'] as const;

const limit = z.number().int().min(0).max(LIMITS.timelineLimit);
const oldRooms = z.looseObject({ timeline_limit: limit.nullish(), required_state: requiredState.nullish() });

const subscription = z.looseObject({
  timeline_limit: limit.nullish(),
  required_state: requiredState.nullish(),
  include_heroes: z.boolean().nullish(),
  include_old_rooms: oldRooms.nullish(),
});

const list = subscription.extend({
  ranges: z.array(range).max(100).nullish(),
  sort: z.array(z.enum(SORTS)).nullish(),
  filters: filters.nullish(),
  bump_event_types: z.array(z.string()).nullish(),
  slow_get_all_rooms: z.boolean().nullish(),
  deleted: z.boolean().nullish(),
});

const toDevice = z.looseObject({
  enabled: z.boolean().nullish(),
  limit: z.number().int().min(1).nullish(),
  since: z
    .string()
    .regex(/^\d{0,15}$/, 'must be the next_batch of a previous response')
    .nullish(),
});

const body = z.looseObject({
  conn_id: z.string().max(LIMITS.connIdLength).nullish(),
  txn_id: z.string().nullish(),
  pos: z.string().nullish(),
  timeout: bodyTimeout.nullish(),
  lists: dictionary(z.string().min(1).max(LIMITS.listKeyLength), list)
    .refine((l) => l.size <= LIMITS.lists, `at most ${LIMITS.lists} lists`)
    .nullish(),
  room_subscriptions: dictionary(z.string().min(1), subscription).nullish(),
  unsubscribe_rooms: z.array(z.string()).nullish(),
  extensions: z
    .looseObject({
      to_device: toDevice.nullish(),
      e2ee: z.looseObject({ enabled: z.boolean().nullish() }).nullish(),
      account_data: scoped.nullish(),
      receipts: scoped.nullish(),
      typing: scoped.nullish(),
    })
    .nullish(),
});

type Body = z.infer<typeof body>;
type WireList = z.infer<typeof list>;

const orUndefined = <T>(v: T | null | undefined): T | undefined => v ?? undefined;

/** Ranges must not overlap: the client could not tell which one a room index belongs to. */
function checkRanges(name: string, ranges: [number, number][] | null | undefined) {
  const sorted = [...(ranges ?? [])].sort((a, b) => a[0] - b[0]);
  for (let i = 1; i < sorted.length; i++) {
    if ((sorted[i] as [number, number])[0] <= (sorted[i - 1] as [number, number])[1])
      throw invalidParam(`lists.${name}.ranges`, 'ranges must not overlap');
  }
}

function toOldRooms(o: z.infer<typeof oldRooms> | null | undefined): RoomConfig['includeOldRooms'] {
  return o ? { timelineLimit: o.timeline_limit ?? 0, requiredState: o.required_state ?? [] } : undefined;
}

function toListDelta(name: string, l: WireList): ListDelta {
  checkRanges(name, l.ranges);
  return {
    ranges: orUndefined(l.ranges),
    sort: orUndefined(l.sort) as SortBy[] | undefined,
    requiredState: orUndefined(l.required_state),
    timelineLimit: orUndefined(l.timeline_limit),
    filters: l.filters ? toFilters(l.filters) : undefined,
    bumpEventTypes: orUndefined(l.bump_event_types),
    includeHeroes: orUndefined(l.include_heroes),
    includeOldRooms: toOldRooms(l.include_old_rooms),
    slowGetAllRooms: orUndefined(l.slow_get_all_rooms),
    deleted: orUndefined(l.deleted),
  };
}

function toExtensionDeltas(e: Body['extensions']): StickyDelta['extensions'] {
  const out: StickyDelta['extensions'] = {};
  const names: ExtensionName[] = ['to_device', 'e2ee', 'account_data', 'receipts', 'typing'];
  for (const name of names) {
    const wire = e?.[name] as Record<string, unknown> | null | undefined;
    if (!wire) continue;
    const delta: ExtensionDelta = {};
    for (const field of ['enabled', 'lists', 'rooms', 'limit', 'since'] as const) {
      const v = wire[field];
      if (v !== undefined && v !== null) (delta as Record<string, unknown>)[field] = v;
    }
    out[name] = delta;
  }
  return out;
}

export function parseMsc3575(rawQuery: unknown, rawBody: unknown): ParsedSync {
  const { q, d } = validateSync(body, rawQuery, rawBody);
  const lists = new Map([...(d.lists ?? [])].map(([name, l]) => [name, toListDelta(name, l)]));
  const subs = [...(d.room_subscriptions ?? [])].map(([roomId, s]): [string, RoomConfig] => [
    roomId,
    {
      timelineLimit: s.timeline_limit ?? 0,
      requiredState: s.required_state ?? [],
      includeHeroes: s.include_heroes ?? false,
      includeOldRooms: toOldRooms(s.include_old_rooms),
    },
  ]);
  return {
    txnId: orUndefined(d.txn_id),
    request: {
      protocol: 'msc3575',
      connId: d.conn_id ?? '',
      pos: q.pos ?? orUndefined(d.pos),
      timeoutMs: q.timeout ?? d.timeout ?? DEFAULT_TIMEOUT_MS,
      lists: new Map(),
      roomSubscriptions: new Map(subs),
      unsubscribeRooms: d.unsubscribe_rooms ?? [],
      extensions: {},
      sticky: { lists, extensions: toExtensionDeltas(d.extensions) },
    },
  };
}

/** Whether a POST body on the classic /sync path is a sliding sync request (as the Go proxy served it there). */
export function isSlidingSyncBody(rawBody: unknown): boolean {
  if (typeof rawBody !== 'object' || rawBody === null || Array.isArray(rawBody)) return false;
  return ['lists', 'room_subscriptions', 'unsubscribe_rooms', 'extensions', 'conn_id', 'txn_id'].some((k) => k in rawBody);
}
