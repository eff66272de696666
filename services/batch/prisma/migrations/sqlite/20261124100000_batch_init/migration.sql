-- BatchJob tables (sqlite). Kept in step with ../../../schema.prisma by hand; the batch tests
-- exercise every field against a migrated database.
CREATE TABLE "batch_items" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "values" JSONB NOT NULL,
    "state" TEXT NOT NULL DEFAULT 'PENDING',
    "probabilities" JSONB,
    "labels" JSONB,
    "label" TEXT NOT NULL DEFAULT '',
    "model" TEXT NOT NULL DEFAULT '',
    "model_version" INTEGER NOT NULL DEFAULT 0,
    "error" TEXT NOT NULL DEFAULT '',
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "lease_owner" TEXT,
    "lease_until_ms" BIGINT NOT NULL DEFAULT 0,
    "created_at" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" DATETIME NOT NULL,
    "predicted_at" DATETIME
);
CREATE INDEX "batch_items_state_id_idx" ON "batch_items"("state", "id");

CREATE TABLE "batch_job_runs" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "worker" TEXT NOT NULL,
    "started_at" DATETIME NOT NULL,
    "ended_at" DATETIME,
    "claimed" INTEGER NOT NULL DEFAULT 0,
    "predicted" INTEGER NOT NULL DEFAULT 0,
    "failed" INTEGER NOT NULL DEFAULT 0,
    "released" INTEGER NOT NULL DEFAULT 0,
    "error" TEXT NOT NULL DEFAULT ''
);
CREATE INDEX "batch_job_runs_started_at_idx" ON "batch_job_runs"("started_at");
