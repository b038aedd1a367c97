-- Every replication slot that holds back more than $1 bytes of WAL, has less than $2 bytes of
-- WAL left before it is lost, or will lose (or has lost) the WAL it needs. Run it every minute;
-- page on any row. A lost slot has no restart_lsn: wal_status alone names it.
SELECT slot_name,
       CASE
         WHEN wal_status = 'lost' THEN 'lost: the WAL it needs is gone; rebuild its consumer from a snapshot'
         WHEN wal_status = 'unreserved' THEN 'unreserved: the next checkpoint removes WAL it still needs'
         WHEN wal_status = 'extended' THEN 'extended: it holds more WAL than max_wal_size'
         WHEN safe_wal_size < $2 THEN 'close to max_slot_wal_keep_size: little WAL left before it is lost'
         ELSE 'holds back more WAL than the alert allows'
       END AS alert,
       pg_size_pretty(pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)) AS wal_held_back
  FROM pg_replication_slots
 WHERE wal_status IN ('extended', 'unreserved', 'lost')
    OR safe_wal_size < $2
    OR pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > $1
 ORDER BY slot_name
