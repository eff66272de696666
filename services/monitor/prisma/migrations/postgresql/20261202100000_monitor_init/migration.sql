-- Monitor tables (postgresql). Kept in step with ../../../schema.prisma by hand; test/monitor.test.ts
-- exercises them against a migrated database. prediction_records is partitioned by day on
-- time_ms: record-store.ts creates each day's partition ahead of time and drops those older
-- than the retention; the default partition takes records of days without one (never an error).
-- A unique key must include the partition key: a resent record has the same time, so
-- (request_id, time_ms) keeps resends out.
CREATE TABLE "prediction_records" (
    "request_id" TEXT NOT NULL,
    "time_ms" BIGINT NOT NULL,
    "model" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "source" INTEGER NOT NULL,
    "status" INTEGER NOT NULL,
    "outlier_rows" INTEGER NOT NULL,
    "parent_request_id" TEXT,
    "record" BYTEA NOT NULL,
    PRIMARY KEY ("request_id", "time_ms")
) PARTITION BY RANGE ("time_ms");
CREATE TABLE "prediction_records_default" PARTITION OF "prediction_records" DEFAULT;
CREATE INDEX "prediction_records_model_time_ms_idx" ON "prediction_records"("model", "time_ms");
CREATE INDEX "prediction_records_parent_request_id_idx" ON "prediction_records"("parent_request_id") WHERE "parent_request_id" IS NOT NULL;

CREATE TABLE "drift_windows" (
    "model" TEXT NOT NULL,
    "version" INTEGER NOT NULL,
    "start_ms" BIGINT NOT NULL,
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
    "value" DOUBLE PRECISION NOT NULL,
    "threshold" DOUBLE PRECISION NOT NULL,
    "window_start_ms" BIGINT NOT NULL,
    "fired_at_ms" BIGINT NOT NULL,
    "resolved_at_ms" BIGINT,
    "summary" TEXT NOT NULL
);
CREATE INDEX "monitor_alerts_state_idx" ON "monitor_alerts"("state");
CREATE INDEX "monitor_alerts_model_fired_at_ms_idx" ON "monitor_alerts"("model", "fired_at_ms");
