-- room_state and state_changes point at their events, checked once per statement instead of
-- once per row.
--
-- The foreign keys of 0002 ran a trigger per row, and each of those locks the referenced
-- event (FOR KEY SHARE: a WAL record and a dirtied page per row): in a 10,000-room initial
-- sync, 200,000 such checks took about a third of the whole ingest. The statement-level
-- triggers below make the same promise, that every event_nid names a stored event, with one
-- anti-join over the rows a statement wrote.
--
-- What the foreign keys also did, refusing to delete a referenced event, is kept for state
-- events (the only ones state rows reference); deleting message events, which retention
-- does, no longer scans room_state and state_changes for each of them. No row lock is needed
-- against a concurrent delete: only retention deletes events, never state events, and event
-- nids are never updated.
ALTER TABLE state_changes DROP CONSTRAINT state_changes_event_nid_fkey;
ALTER TABLE room_state DROP CONSTRAINT room_state_event_nid_fkey;

CREATE FUNCTION syncv3_check_state_event_nids() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  missing bigint;
BEGIN
  SELECT n.event_nid INTO missing FROM new_rows n
   WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.nid = n.event_nid) LIMIT 1;
  IF FOUND THEN
    RAISE foreign_key_violation USING MESSAGE = format('%s.event_nid %s is not a stored event', TG_TABLE_NAME, missing);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER state_changes_event_nid AFTER INSERT ON state_changes
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION syncv3_check_state_event_nids();
CREATE TRIGGER room_state_event_nid_insert AFTER INSERT ON room_state
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION syncv3_check_state_event_nids();
CREATE TRIGGER room_state_event_nid_update AFTER UPDATE ON room_state
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION syncv3_check_state_event_nids();

CREATE FUNCTION syncv3_check_state_events_unreferenced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  referenced bigint;
BEGIN
  SELECT o.nid INTO referenced FROM old_rows o
   WHERE o.state_key IS NOT NULL
     AND (EXISTS (SELECT 1 FROM room_state s WHERE s.event_nid = o.nid)
          OR EXISTS (SELECT 1 FROM state_changes c WHERE c.event_nid = o.nid))
   LIMIT 1;
  IF FOUND THEN
    RAISE foreign_key_violation USING MESSAGE = format('event %s is still referenced by room state', referenced);
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER events_state_referenced AFTER DELETE ON events
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION syncv3_check_state_events_unreferenced();
