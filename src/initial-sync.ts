// A device's first v2 sync as the pollers report it and auth/ reads it (shared vocabulary, so
// the two layers agree on one type without importing each other).

/** Why a device's first v2 sync cannot be had for now. */
export type InitialSyncFailure =
  /** The homeserver refused the device's token and it has no newer one. */
  | { reason: 'token_dead'; softLogout: boolean }
  /** The homeserver keeps answering the first sync unusably, with nothing to skip to. */
  | { reason: 'homeserver_failing' }
  /** The poller was stopped (shutdown, logout) or crashed: a retry starts it again. */
  | { reason: 'stopped' | 'crashed' };

/** How far this process has got with a device's first v2 sync (shown on the /client/ page). */
export interface InitialSyncProgress {
  /** The first sync is behind the device: stored, or skipped past as unusable. */
  done: boolean;
  /** When this process began waiting for it (epoch ms); absent when it was done before. */
  startedAt?: number;
  /** When it was stored (epoch ms), by this process. */
  storedAt?: number;
  /** Response body bytes received so far by the latest attempt. */
  bytesReceived: number;
  /** Rooms it held, once stored by this process. */
  rooms?: number;
}
