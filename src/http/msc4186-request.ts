// MSC4186 (simplified sliding sync, unstable) request bodies, validated at the edge.
// Unknown fields and unknown extensions are ignored; wrong types are 400 M_BAD_JSON and values
// out of range 400 M_INVALID_PARAM, each naming the field. What can be defaulted is defaulted:
// matrix-js-sdk answers every 400 by dropping its pos and retrying 50 ms later.
import { z } from 'zod';
import { badJson, invalidParam, type MatrixError, notJson } from '../matrix-error.js';
import type { ExtensionsRequest, ListFilters, ListRequest, RoomConfig, SyncRequest } from '../sync/types.js';
import { bodyTimeout, dictionary, queryTimeout, refuseNul } from './input-limits.js';

export const LIMITS = { lists: 100, listKeyLength: 64, timelineLimit: 1000, toDeviceLimit: 100, connIdLength: 256 };

export const requiredState = z.array(z.tuple([z.string(), z.string()]));
const index = z.number().int().min(0);
export const range = z.tuple([index, index]).refine(([a, b]) => a <= b, 'range start must not be after its end');
const nullableTypes = z.array(z.string().nullable());

// The newest MSC4186 text's form: an omitted `type` or `state_key` matches any, so `{}` is all state.
const stateElement = z.looseObject({ type: z.string().optional(), state_key: z.string().optional() });
const requiredStateObject = z.looseObject({
  include: z.array(stateElement).optional(),
  exclude: z.array(stateElement).optional(),
  lazy_members: z.boolean().optional(),
});
type StateElement = z.infer<typeof stateElement>;

const roomConfig = z.looseObject({
  // A list entry with no event can neither preview nor be ordered by a client; one is what room lists ask for.
  timeline_limit: z.number().int().min(0).max(LIMITS.timelineLimit).default(1),
  required_state: z
    .union([requiredState, requiredStateObject], { error: 'must be [type, state_key] pairs or {include, exclude, lazy_members}' })
    .default([]),
});

export const filters = z.looseObject({
  is_dm: z.boolean().optional(),
  is_encrypted: z.boolean().optional(),
  is_invite: z.boolean().optional(),
  is_invited: z.boolean().optional(),
  is_tombstoned: z.boolean().optional(),
  room_types: nullableTypes.optional(),
  not_room_types: nullableTypes.optional(),
  spaces: z.array(z.string()).optional(),
  room_name_like: z.string().optional(),
  tags: z.array(z.string()).optional(),
  not_tags: z.array(z.string()).optional(),
});

const list = roomConfig.extend({
  ranges: z.array(range).max(100).optional(),
  // The final MSC's single `range`.
  range: range.optional(),
  filters: filters.optional(),
});

export const scoped = z.looseObject({
  enabled: z.boolean().optional(),
  lists: z.array(z.string()).optional(),
  rooms: z.array(z.string()).optional(),
});

const extensions = z.looseObject({
  to_device: z
    .looseObject({
      enabled: z.boolean().optional(),
      limit: z.number().int().min(1).optional(),
      since: z
        .string()
        .regex(/^\d{1,15}$/, 'must be the next_batch of a previous response')
        .optional(),
    })
    .optional(),
  e2ee: z.looseObject({ enabled: z.boolean().optional() }).optional(),
  account_data: scoped.optional(),
  receipts: scoped.optional(),
  typing: scoped.optional(),
});

const body = z.looseObject({
  conn_id: z.string().max(LIMITS.connIdLength).optional(),
  txn_id: z.string().optional(),
  pos: z.string().optional(),
  timeout: bodyTimeout.optional(),
  lists: dictionary(z.string().min(1).max(LIMITS.listKeyLength), list)
    .refine((l) => l.size <= LIMITS.lists, `at most ${LIMITS.lists} lists`)
    .optional(),
  room_subscriptions: dictionary(z.string().min(1), roomConfig).optional(),
  unsubscribe_rooms: z.array(z.string()).optional(),
  extensions: extensions.optional(),
});

const query = z.looseObject({
  pos: z.string().optional(),
  timeout: queryTimeout.optional(),
});

type Body = z.infer<typeof body>;

function toMatrixError(error: z.ZodError, root: string): MatrixError {
  const issue = error.issues[0];
  const field = [root, ...(issue?.path ?? [])].filter((p) => p !== '').join('.');
  const message = issue?.message ?? 'invalid';
  // A value of neither accepted shape (required_state's two forms) is a wrong type too.
  return issue?.code === 'invalid_type' || issue?.code === 'invalid_union'
    ? badJson(field || 'body', message)
    : invalidParam(field || 'body', message);
}

export function toFilters(f: z.infer<typeof filters> | undefined): ListFilters | undefined {
  if (!f) return undefined;
  return {
    isDm: f.is_dm,
    isEncrypted: f.is_encrypted,
    isInvite: f.is_invite ?? f.is_invited,
    roomTypes: f.room_types,
    notRoomTypes: f.not_room_types,
    spaces: f.spaces,
    roomNameLike: f.room_name_like,
    tags: f.tags,
    notTags: f.not_tags,
    isTombstoned: f.is_tombstoned,
  };
}

const asPair = (e: StateElement): [string, string] => [e.type ?? '*', e.state_key ?? '*'];

/** Both required_state forms as the one internal model: (type, key) pairs, "*" for any, plus exclusions. */
function toConfig(c: z.infer<typeof roomConfig>): RoomConfig {
  const rs = c.required_state;
  if (Array.isArray(rs)) return { timelineLimit: c.timeline_limit, requiredState: rs };
  const included = (rs.include ?? []).map(asPair);
  if (rs.lazy_members) included.push(['m.room.member', '$LAZY']);
  const config: RoomConfig = { timelineLimit: c.timeline_limit, requiredState: included };
  if (rs.exclude?.length) config.requiredStateExclude = rs.exclude.map(asPair);
  return config;
}

function toExtensions(e: Body['extensions']): ExtensionsRequest {
  const on = (x: { enabled?: boolean } | undefined) => x?.enabled === true;
  const scope = (x: z.infer<typeof scoped>) => ({ lists: x.lists, rooms: x.rooms });
  const out: ExtensionsRequest = {};
  if (on(e?.to_device)) out.toDevice = { limit: Math.min(e?.to_device?.limit ?? 100, LIMITS.toDeviceLimit), since: e?.to_device?.since };
  if (on(e?.e2ee)) out.e2ee = {};
  if (e?.account_data && on(e.account_data)) out.accountData = scope(e.account_data);
  if (e?.receipts && on(e.receipts)) out.receipts = scope(e.receipts);
  if (e?.typing && on(e.typing)) out.typing = scope(e.typing);
  return out;
}

/** What both protocols' parsers give the route. */
export interface ParsedSync {
  request: SyncRequest;
  txnId: string | undefined;
}

/** Validates a sliding sync request's query and body against `schema`; throws a MatrixError naming the first bad field. */
export function validateSync<S extends z.ZodType>(
  schema: S,
  rawQuery: unknown,
  rawBody: unknown,
): { q: z.infer<typeof query>; d: z.infer<S> } {
  if (rawBody === undefined) throw notJson('Request body is empty');
  if (typeof rawBody !== 'object' || rawBody === null || Array.isArray(rawBody)) throw badJson('body', 'must be a JSON object');
  refuseNul(rawQuery, '');
  refuseNul(rawBody, '');
  const q = query.safeParse(rawQuery ?? {});
  if (!q.success) throw toMatrixError(q.error, '');
  const b = schema.safeParse(rawBody);
  if (!b.success) throw toMatrixError(b.error, '');
  return { q: q.data, d: b.data };
}

export function parseMsc4186(rawQuery: unknown, rawBody: unknown): ParsedSync {
  const { q, d } = validateSync(body, rawQuery, rawBody);
  const lists = new Map<string, ListRequest>();
  for (const [name, l] of d.lists ?? []) {
    const ranges = l.ranges ?? (l.range ? [l.range] : undefined);
    lists.set(name, { ...toConfig(l), ranges, filters: toFilters(l.filters) });
  }
  return {
    txnId: d.txn_id,
    request: {
      protocol: 'msc4186',
      connId: d.conn_id ?? '',
      pos: q.pos ?? d.pos,
      timeoutMs: q.timeout ?? d.timeout ?? 0,
      lists,
      roomSubscriptions: new Map([...(d.room_subscriptions ?? [])].map(([id, c]) => [id, toConfig(c)])),
      unsubscribeRooms: d.unsubscribe_rooms ?? [],
      extensions: toExtensions(d.extensions),
    },
  };
}
