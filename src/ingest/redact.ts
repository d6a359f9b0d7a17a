// Redaction per room version (https://spec.matrix.org/v1.12/rooms/v11/#redactions and the
// earlier versions' sections): keep the keys the algorithm keeps, drop everything else.

const TOP_LEVEL = [
  'event_id',
  'type',
  'room_id',
  'sender',
  'state_key',
  'content',
  'hashes',
  'signatures',
  'depth',
  'prev_events',
  'auth_events',
  'origin_server_ts',
];
/** Keys that versions 1–10 also keep; v11 dropped them. */
const TOP_LEVEL_PRE_V11 = ['origin', 'membership', 'prev_state'];

const isV11Plus = (version: string) => !/^([1-9]|10)$/.test(version);
const versionAtLeast = (version: string, n: number) => !/^\d+$/.test(version) || Number(version) >= n;

function contentKeys(type: string, version: string): string[] | 'all' {
  const v11 = isV11Plus(version);
  switch (type) {
    case 'm.room.member':
      return [
        'membership',
        ...(versionAtLeast(version, 9) ? ['join_authorised_via_users_server'] : []),
        ...(v11 ? ['third_party_invite'] : []),
      ];
    case 'm.room.create':
      return v11 ? 'all' : ['creator'];
    case 'm.room.join_rules':
      return versionAtLeast(version, 8) ? ['join_rule', 'allow'] : ['join_rule'];
    case 'm.room.power_levels':
      return ['ban', 'events', 'events_default', 'kick', 'redact', 'state_default', 'users', 'users_default', ...(v11 ? ['invite'] : [])];
    case 'm.room.history_visibility':
      return ['history_visibility'];
    case 'm.room.aliases':
      return versionAtLeast(version, 6) ? [] : ['aliases'];
    case 'm.room.redaction':
      return v11 ? ['redacts'] : [];
    default:
      return [];
  }
}

function pick(obj: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const k of keys) if (k in obj) out[k] = obj[k];
  return out;
}

/**
 * Returns the redacted form of `event`, with `unsigned.redacted_because` set to the redaction
 * event as clients expect (Synapse does the same).
 */
export function redactEvent(
  event: Record<string, unknown>,
  roomVersion: string,
  redaction: Record<string, unknown>,
): Record<string, unknown> {
  const out = pick(event, isV11Plus(roomVersion) ? TOP_LEVEL : [...TOP_LEVEL, ...TOP_LEVEL_PRE_V11]);
  const content = (event.content ?? {}) as Record<string, unknown>;
  const keep = contentKeys(String(event.type), roomVersion);
  let kept = keep === 'all' ? { ...content } : pick(content, keep);
  if (event.type === 'm.room.member' && isV11Plus(roomVersion) && kept.third_party_invite) {
    // v11 keeps only the `signed` part of third_party_invite.
    const signed = (kept.third_party_invite as Record<string, unknown>).signed;
    kept = { ...kept, third_party_invite: signed === undefined ? {} : { signed } };
  }
  out.content = kept;
  out.unsigned = { redacted_because: redaction };
  return out;
}

/** The event id a redaction targets: `content.redacts` from v11, top-level `redacts` before. */
export function redactionTarget(redaction: Record<string, unknown>): string | undefined {
  const fromContent = (redaction.content as Record<string, unknown> | undefined)?.redacts;
  if (typeof fromContent === 'string') return fromContent;
  return typeof redaction.redacts === 'string' ? redaction.redacts : undefined;
}
