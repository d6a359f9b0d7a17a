-- Devices the proxy polls upstream for, and the access tokens that reach them.
-- A device outlives its tokens: a refreshed token must continue from the device's stored
-- `since`, so the poller position lives on the device, not on the token.

CREATE TABLE devices (
  user_id text NOT NULL,
  device_id text NOT NULL,
  -- The upstream v2 next_batch to resume from; NULL until the initial sync is ingested.
  since text,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (user_id, device_id)
);

CREATE TABLE tokens (
  -- SHA-256 of the bearer token: what requests are looked up by. The token itself is only
  -- stored encrypted (AES-256-GCM, key = SHA-256 of SYNCV3_SECRET), for the poller to use.
  token_hash bytea PRIMARY KEY CHECK (octet_length(token_hash) = 32),
  token_encrypted bytea NOT NULL,
  user_id text NOT NULL,
  device_id text NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  last_seen_at timestamptz NOT NULL DEFAULT now(),
  FOREIGN KEY (user_id, device_id) REFERENCES devices (user_id, device_id) ON DELETE CASCADE
);

CREATE INDEX tokens_device ON tokens (user_id, device_id);
