-- The accumulator: what every device's v2 /sync told us, stored once.
--
-- Every fact gets a position from ONE sequence, so a sliding sync `pos` is one number that
-- orders events, state changes, memberships, account data, receipts and to-device messages
-- alike. Ingest transactions are serialised (src/ingest/), so positions commit in order and a
-- reader that has seen position P has seen everything below it.
CREATE SEQUENCE stream_pos AS bigint;

CREATE TABLE rooms (
  room_id text PRIMARY KEY,
  -- From m.room.create; decides the redaction algorithm. NULL until the create event is seen.
  room_version text,
  -- The homeserver's counts from the latest v2 `summary` that carried them.
  joined_count integer,
  invited_count integer,
  -- Position of the latest timeline event (recency order of joined rooms).
  latest_nid bigint NOT NULL DEFAULT 0,
  -- Latest event of a "bump" type (messages, not reactions or receipts) and its timestamp:
  -- MSC4186 bump_stamp and MSC3575 timestamp.
  bump_nid bigint NOT NULL DEFAULT 0,
  bump_ts bigint NOT NULL DEFAULT 0,
  -- Position of the latest state change.
  state_pos bigint NOT NULL DEFAULT 0
);

CREATE TABLE events (
  -- The event's position in the stream.
  nid bigint PRIMARY KEY DEFAULT nextval('stream_pos'),
  event_id text NOT NULL UNIQUE,
  room_id text NOT NULL,
  type text NOT NULL,
  state_key text,
  sender text NOT NULL,
  origin_server_ts bigint NOT NULL,
  -- false: only ever seen in a `state` block, so it is not part of the visible timeline.
  in_timeline boolean NOT NULL,
  -- The v2 `prev_batch` of the timeline chunk this event started: a /messages token that
  -- paginates back from just before it.
  prev_batch text,
  -- The v2 next_batch of the response whose chunk this event started: a sync token after the
  -- chunk, which /messages also accepts. The fallback when no prev_batch is at or after the
  -- oldest event served (clients then see some events twice, never miss any).
  chunk_end_token text,
  -- This event started a `limited` chunk: events before it may be missing. Timelines served
  -- across this point are marked limited rather than silently stitched.
  gap_before boolean NOT NULL DEFAULT false,
  redacted boolean NOT NULL DEFAULT false,
  -- The event as the homeserver sent it, minus unsigned.transaction_id (see transaction_ids),
  -- and redacted in place when a redaction arrives.
  json text NOT NULL
);
CREATE INDEX events_room_timeline ON events (room_id, nid) WHERE in_timeline;

-- Current state of each room.
CREATE TABLE room_state (
  room_id text NOT NULL,
  type text NOT NULL,
  state_key text NOT NULL,
  event_nid bigint NOT NULL REFERENCES events (nid),
  -- content.membership of m.room.member events, for member counts and heroes without parsing JSON.
  membership text,
  PRIMARY KEY (room_id, type, state_key)
);

-- Every change of a state key, at the position it took effect. "State as of position P" is
-- the latest row per key at or below P: one row per change, never a snapshot per event.
CREATE TABLE state_changes (
  room_id text NOT NULL,
  type text NOT NULL,
  state_key text NOT NULL,
  pos bigint NOT NULL,
  event_nid bigint NOT NULL REFERENCES events (nid),
  PRIMARY KEY (room_id, type, state_key, pos)
);

-- A user's relation to a room, as that user's own pollers saw it.
CREATE TABLE user_rooms (
  user_id text NOT NULL,
  room_id text NOT NULL,
  membership text NOT NULL CHECK (membership IN ('join', 'invite', 'knock', 'leave', 'ban')),
  -- Where the membership took this value. For leave/ban nothing after it is visible.
  membership_pos bigint NOT NULL,
  -- A leave made by someone else (kick): such rooms stay listed until forgotten.
  kicked boolean NOT NULL DEFAULT false,
  -- Stripped state of an invite or knock (JSON array), shown until the membership changes.
  invite_state text,
  -- From the v2 summary: the homeserver's choice of heroes for this user (JSON array).
  heroes text,
  notification_count integer NOT NULL DEFAULT 0,
  highlight_count integer NOT NULL DEFAULT 0,
  -- unread_thread_notifications as sent (JSON object), or NULL.
  thread_counts text,
  counts_pos bigint NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id, room_id)
);
CREATE INDEX user_rooms_room ON user_rooms (room_id);

CREATE TABLE account_data (
  user_id text NOT NULL,
  -- '' for global account data.
  room_id text NOT NULL,
  type text NOT NULL,
  json text NOT NULL,
  pos bigint NOT NULL,
  PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_user_pos ON account_data (user_id, pos);

-- Latest receipt per (room, type, user, thread). m.read.private rows are served only to their user.
CREATE TABLE receipts (
  room_id text NOT NULL,
  receipt_type text NOT NULL,
  user_id text NOT NULL,
  -- '' when the receipt carries no thread_id.
  thread_id text NOT NULL,
  event_id text NOT NULL,
  -- The receipt's data object (ts, thread_id) as JSON.
  data text NOT NULL,
  pos bigint NOT NULL,
  PRIMARY KEY (room_id, receipt_type, user_id, thread_id)
);
CREATE INDEX receipts_room_pos ON receipts (room_id, pos);

-- unsigned.transaction_id belongs to the device that sent the event and to no one else.
CREATE TABLE transaction_ids (
  event_id text NOT NULL,
  user_id text NOT NULL,
  device_id text NOT NULL,
  txn_id text NOT NULL,
  PRIMARY KEY (event_id, user_id, device_id)
);

-- To-device messages wait here until the device acknowledges them: the homeserver deleted
-- them when our poller advanced `since`, so this is the only copy. Never prune unacknowledged rows.
CREATE TABLE to_device_messages (
  pos bigint PRIMARY KEY DEFAULT nextval('stream_pos'),
  user_id text NOT NULL,
  device_id text NOT NULL,
  json text NOT NULL,
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX to_device_messages_device ON to_device_messages (user_id, device_id, pos);

-- Device list changes per receiving device, latest kind per target user. Like to-device
-- messages they cannot be asked for again, so they are kept until pruned by age.
CREATE TABLE device_list_changes (
  user_id text NOT NULL,
  device_id text NOT NULL,
  target_user_id text NOT NULL,
  kind text NOT NULL CHECK (kind IN ('changed', 'left')),
  pos bigint NOT NULL,
  PRIMARY KEY (user_id, device_id, target_user_id),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);
CREATE INDEX device_list_changes_pos ON device_list_changes (user_id, device_id, pos);

ALTER TABLE devices
  -- JSON objects as last sent by the homeserver, and where they changed.
  ADD COLUMN otk_counts text,
  ADD COLUMN fallback_key_types text,
  ADD COLUMN keys_pos bigint NOT NULL DEFAULT 0,
  -- Set once the device's first (initial) v2 sync is stored: its first client request waits for it.
  ADD COLUMN initial_sync_at timestamptz;

-- Upstream responses we could not use, kept for operators (one row per device and position).
CREATE TABLE poller_problems (
  user_id text NOT NULL,
  device_id text NOT NULL,
  since text NOT NULL,
  failures integer NOT NULL,
  problem text NOT NULL,
  skipped boolean NOT NULL DEFAULT false,
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, device_id, since)
);

-- Sliding sync connections, keyed by (user, device, conn_id). The client's `pos` names a
-- connection position; the rooms table below holds what the CONFIRMED position has sent, and
-- `pending` the small diff of the latest unconfirmed response, so that retrying the confirmed
-- pos works and a write costs what changed rather than the whole connection.
CREATE SEQUENCE connection_pos AS bigint;

CREATE TABLE connections (
  id bigserial PRIMARY KEY,
  user_id text NOT NULL,
  device_id text NOT NULL,
  conn_id text NOT NULL,
  confirmed_pos bigint NOT NULL,
  -- The stream position the confirmed response was computed at.
  confirmed_stream bigint NOT NULL,
  pending_pos bigint,
  pending_stream bigint,
  -- JSON: per-room entries and extension positions the pending response changed.
  pending text,
  -- JSON: extension positions of the confirmed response (e.g. account data, device lists).
  extensions text NOT NULL DEFAULT '{}',
  created_at timestamptz NOT NULL DEFAULT now(),
  last_used_at timestamptz NOT NULL DEFAULT now(),
  UNIQUE (user_id, device_id, conn_id),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE TABLE connection_rooms (
  connection_id bigint NOT NULL REFERENCES connections (id) ON DELETE CASCADE,
  room_id text NOT NULL,
  -- JSON: stream position sent up to, effective config, lazily sent members.
  sent text NOT NULL,
  PRIMARY KEY (connection_id, room_id)
);
