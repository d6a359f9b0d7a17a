// What the ingest side tells the serving side, after commit. Messages carry ids and positions,
// never payloads: readers fetch what they need from the store (or their caches), so a message
// is small, and one lost or late message cannot carry stale data.

export interface BusMessages {
  /** Every ingest commit: positions up to `pos` are now readable. Readers never go past it. */
  'stream.advanced': { pos: number };
  /** New timeline events or state changes in a room, with the room's new recency positions. */
  'room.changed': {
    roomId: string;
    pos: number;
    newEvents: number;
    /** Position of the latest state change, when state changed. */
    statePos: number | undefined;
    latestNid: number;
    bump: { nid: number; ts: number } | undefined;
  };
  /**
   * Stored events of these rooms were changed in place (redacted, moved into the timeline, gap
   * marks set or cleared), perhaps with no room.changed: copies of them in memory are stale.
   */
  'room.rewritten': { roomIds: string[] };
  /** A user's room set or per-room data changed: membership, invite, unread counts, heroes, room account data. */
  'user.rooms_changed': { userId: string; roomIds: string[]; pos: number };
  /** Global account data of a user changed. */
  'user.account_data': { userId: string; types: string[]; pos: number };
  /** New receipts in a room. */
  'room.receipts': { roomId: string; pos: number };
  /** Typing is ephemeral: memory and bus only, never stored. */
  'room.typing': { roomId: string; userIds: string[] };
  /** To-device messages, device list changes or key counts for one device. */
  'device.data': { userId: string; deviceId: string; pos: number; toDevice: number; deviceLists: boolean; keys: boolean };
  /**
   * A device's first v2 sync is stored (or skipped past): processes serving the device while
   * another polls it let its waiting requests proceed (SYNCV3_CLUSTER).
   */
  'device.initial_sync_done': { userId: string; deviceId: string };
  /** The homeserver rejected the device's token: end its connections. */
  'device.token_expired': { userId: string; deviceId: string; softLogout: boolean };
}

export type BusTopic = keyof BusMessages;
