-- Monitor tables (sqlite). Kept in step with ../../../schema.prisma by hand; test/monitor.test.ts
-- exercises them against a migrated database. SQLite has no partitions: retention deletes old
-- records model by model through the (model, time_ms) index (record-store.ts).
-- Unlike PostgreSQL's (which the schema describes), records are found by request id through a
-- 53-bit hash of it, "id_hash": an index of integers is 2.5x smaller than one of the ids
-- themselves, so a batch of inserts touches fewer of its pages (1.5x the rows per second at a
-- million records). record-store.ts checks the id itself, so two ids of one hash both count.
CREATE TABLE "prediction_records" (
    "id_hash" INTEGER NOT NULL,
    "request_id" TEXT NOT NULL,
    "time_ms" INTEGER NOT NULL,
    "model" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "source" INTEGER NOT NULL,
    "status" INTEGER NOT NULL,
    "outlier_rows" INTEGER NOT NULL,
    "parent_request_id" TEXT,
    "record" BLOB NOT NULL
);
CREATE INDEX "prediction_records_id_hash_idx" ON "prediction_records"("id_hash");
CREATE INDEX "prediction_records_model_time_ms_idx" ON "prediction_records"("model", "time_ms");
CREATE INDEX "prediction_records_parent_request_id_idx" ON "prediction_records"("parent_request_id") WHERE "parent_request_id" IS NOT NULL;

CREATE TABLE "drift_windows" (
    "model" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "start_ms" INTEGER NOT NULL,
    "report" TEXT NOT NULL,
    PRIMARY KEY ("model", "version", "start_ms")
);

CREATE TABLE "monitor_alerts" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "model" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "kind" INTEGER NOT NULL,
    "feature" TEXT NOT NULL,
    "statistic" TEXT NOT NULL,
    "state" INTEGER NOT NULL,
    "value" REAL NOT NULL,
    "threshold" REAL NOT NULL,
    "window_start_ms" INTEGER NOT NULL,
    "fired_at_ms" INTEGER NOT NULL,
    "resolved_at_ms" INTEGER,
    "summary" TEXT NOT NULL
);
CREATE INDEX "monitor_alerts_state_idx" ON "monitor_alerts"("state");
CREATE INDEX "monitor_alerts_model_fired_at_ms_idx" ON "monitor_alerts"("model", "fired_at_ms");
