// What an invited or knocked room's stripped state (`invite_state`, as stored from v2) says
// about the room's name and avatar. Synapse sends `name` and `avatar` for such rooms; the proxy,
// never in the room itself, has only the stripped state, which carries both when the room has them.

interface Stripped {
  type?: unknown;
  state_key?: unknown;
  content?: unknown;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** The stripped events of a stored invite_state: a list, or v2's `{events: [...]}`. */
function strippedEvents(inviteState: string | null): Stripped[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(inviteState ?? '[]');
  } catch {
    return [];
  }
  const events = Array.isArray(parsed) ? parsed : isObject(parsed) && Array.isArray(parsed.events) ? parsed.events : [];
  return events.filter(isObject);
}

/** `name` and `avatar` as for a joined room: a non-blank `m.room.name` name, a non-empty `m.room.avatar` url. */
export function strippedNameAndAvatar(inviteState: string | null): { name?: string; avatar?: string } {
  const out: { name?: string; avatar?: string } = {};
  for (const e of strippedEvents(inviteState)) {
    if (e.state_key !== '' || !isObject(e.content)) continue;
    const { name, url } = e.content;
    if (e.type === 'm.room.name' && typeof name === 'string' && name.trim()) out.name = name;
    if (e.type === 'm.room.avatar' && typeof url === 'string' && url) out.avatar = url;
  }
  return out;
}
