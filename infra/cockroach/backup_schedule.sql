-- Holdfast's own backup schedule, beside CockroachDB Cloud's managed backups
-- (modules/cockroach: cockroach_cluster.backup_config, hourly, kept 30 days by default).
-- Managed backups live in the Cloud account with the cluster; this schedule writes to a
-- bucket the platform team owns (another account, object lock on), so that losing the
-- cluster or the Cloud account loses no history. Revision history makes any instant of the
-- retention window restorable (RESTORE ... AS OF SYSTEM TIME).
--
-- Run once per cluster, as an admin (the owner user of bootstrap/ is one on CockroachDB
-- Cloud), after `holdfast migrate`:
--   cockroach sql --url "$MIGRATION_DATABASE_URL" --file infra/cockroach/backup_schedule.sql
-- with the bucket's URL in the external connection below (never commit its credentials:
-- `sed` them in from your secret store, or use implicit/workload identity auth).
-- Run again, the schedule is left as it is (IF NOT EXISTS); the connection statement then
-- fails with "already exists", which is harmless. Restore: docs/operations.md, "Restore".

CREATE EXTERNAL CONNECTION holdfast_backups
  AS 'gs://HOLDFAST_BACKUP_BUCKET/holdfast?AUTH=implicit';

-- Incremental backups every 15 minutes, a full one every day; detached so the schedule does
-- not hold a SQL session; a run still going when the next is due is skipped, not queued.
CREATE SCHEDULE IF NOT EXISTS holdfast_backup
  FOR BACKUP DATABASE holdfast INTO 'external://holdfast_backups'
  WITH revision_history, detached
  RECURRING '*/15 * * * *'
  FULL BACKUP '@daily'
  WITH SCHEDULE OPTIONS first_run = 'now', on_previous_running = 'skip',
    on_execution_failure = 'reschedule';
