-- Monitor tables (sqlite). Kept in step with ../../../schema.prisma by hand; test/monitor.test.ts
-- exercises them against a migrated database. SQLite has no partitions: retention deletes old
-- records model by model through the (model, time_ms) index (record-store.ts).
CREATE TABLE "prediction_records" (
    "request_id" TEXT NOT NULL,
    "time_ms" INTEGER NOT NULL,
    "model" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "source" INTEGER NOT NULL,
    "status" INTEGER NOT NULL,
    "outlier_rows" INTEGER NOT NULL,
    "parent_request_id" TEXT,
    "record" BLOB NOT NULL,
    PRIMARY KEY ("request_id")
);
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
