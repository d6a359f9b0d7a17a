// The v2 /sync response, validated at the edge. Validation is per event: one malformed event
// is dropped (and counted) instead of failing a response that may carry thousands of good
// ones; a response whose skeleton is wrong (no next_batch, rooms not an object) fails whole.
// See https://spec.matrix.org/v1.12/client-server-api/#get_matrixclientv3sync
import { z } from 'zod';

const jsonObject = z.record(z.string(), z.unknown());

/** Any event: at least a type and an object content. */
const basicEvent = z.looseObject({ type: z.string().min(1), content: jsonObject });
/** A room event in a timeline or state block. */
const roomEvent = z.looseObject({
  type: z.string().min(1),
  content: jsonObject,
  event_id: z.string().min(1),
  sender: z.string().min(1),
  origin_server_ts: z.number().int(),
  state_key: z.string().optional(),
  unsigned: jsonObject.optional(),
});
/** Stripped state of invites and knocks: no event id, no timestamp. */
const strippedEvent = z.looseObject({ type: z.string().min(1), state_key: z.string(), sender: z.string(), content: jsonObject });

export type BasicEvent = z.infer<typeof basicEvent>;
export type RoomEvent = z.infer<typeof roomEvent>;
export type StrippedEvent = z.infer<typeof strippedEvent>;

/** A room event as /messages and /context return them (the same shape), or undefined when malformed. */
export function parseRoomEvent(value: unknown): RoomEvent | undefined {
  const parsed = roomEvent.safeParse(value);
  return parsed.success ? parsed.data : undefined;
}

/** Counts what was dropped while parsing one response, for logs and metrics. */
export interface ParseStats {
  droppedEvents: number;
}

// parse is synchronous, so the response being parsed owns this slot for the whole call; the
// schema is then built once instead of per response.
let current: ParseStats = { droppedEvents: 0 };

function eventsOf<T>(schema: z.ZodType<T>) {
  return z
    .looseObject({ events: z.array(z.unknown()).catch([]).default([]) })
    .optional()
    .transform((block): T[] => {
      const out: T[] = [];
      for (const raw of block?.events ?? []) {
        const parsed = schema.safeParse(raw);
        if (parsed.success) out.push(parsed.data);
        else current.droppedEvents++;
      }
      return out;
    });
}

function buildSchema() {
  // Built once: a zod schema compiles itself on first use, which per room costs more than the
  // parsing (an initial sync has thousands of rooms).
  const timelineEvents = eventsOf(roomEvent);
  const timeline = z
    .looseObject({
      events: z.array(z.unknown()).catch([]).default([]),
      limited: z.boolean().catch(false).default(false),
      prev_batch: z.string().optional().catch(undefined),
    })
    .optional()
    .transform((t) => ({
      events: timelineEvents.parse({ events: t?.events ?? [] }),
      limited: t?.limited ?? false,
      prevBatch: t?.prev_batch,
    }));

  const counts = z
    .looseObject({ notification_count: z.number().int().min(0).optional(), highlight_count: z.number().int().min(0).optional() })
    .optional()
    .catch(undefined);

  const joinedRoom = z.looseObject({
    state: eventsOf(roomEvent),
    timeline,
    ephemeral: eventsOf(basicEvent),
    account_data: eventsOf(basicEvent),
    unread_notifications: counts,
    unread_thread_notifications: z.record(z.string(), counts).optional().catch(undefined),
    summary: z
      .looseObject({
        'm.heroes': z.array(z.string()).optional(),
        'm.joined_member_count': z.number().int().min(0).optional(),
        'm.invited_member_count': z.number().int().min(0).optional(),
      })
      .optional()
      .catch(undefined),
  });
  const strippedRoom = (key: 'invite_state' | 'knock_state') => z.looseObject({ [key]: eventsOf(strippedEvent) });
  const rooms = <T extends z.ZodType>(room: T) => z.record(z.string().min(1), room).optional().default({});

  return z.looseObject({
    next_batch: z.string().min(1),
    rooms: z
      .looseObject({
        join: rooms(joinedRoom),
        invite: rooms(strippedRoom('invite_state')),
        knock: rooms(strippedRoom('knock_state')),
        leave: rooms(joinedRoom),
      })
      .optional()
      .default({ join: {}, invite: {}, knock: {}, leave: {} }),
    account_data: eventsOf(basicEvent),
    to_device: eventsOf(z.looseObject({ type: z.string().min(1), sender: z.string(), content: jsonObject })),
    device_lists: z
      .looseObject({ changed: z.array(z.string()).catch([]).default([]), left: z.array(z.string()).catch([]).default([]) })
      .optional()
      .catch(undefined),
    device_one_time_keys_count: z.record(z.string(), z.number()).optional().catch(undefined),
    device_unused_fallback_key_types: z.array(z.string()).optional().catch(undefined),
  });
}

const syncSchema = buildSchema();

export type SyncResponse = z.infer<typeof syncSchema>;
export type JoinedRoomSync = SyncResponse['rooms']['join'][string];

export function parseSyncResponse(body: unknown): { response: SyncResponse; stats: ParseStats } | { error: string } {
  const stats: ParseStats = { droppedEvents: 0 };
  current = stats;
  const result = syncSchema.safeParse(body);
  if (!result.success) {
    const first = result.error.issues[0];
    return { error: `invalid /sync response at ${first?.path.join('.') || '(root)'}: ${first?.message}` };
  }
  return { response: result.data, stats };
}
