-- The deployment loop (PostgreSQL): artifacts and signatures on versions, the event log behind
-- WatchModelEvents and the alias history, and what each Predictor serves.
ALTER TABLE "model_versions" ADD COLUMN "signature" JSONB;
ALTER TABLE "model_versions" ADD COLUMN "files" JSONB NOT NULL DEFAULT '[]';

CREATE TABLE "model_events" (
    "sequence" SERIAL NOT NULL PRIMARY KEY,
    "kind" TEXT NOT NULL,
    "project_id" TEXT NOT NULL,
    "project_name" TEXT NOT NULL,
    "model_id" TEXT NOT NULL,
    "model_name" TEXT NOT NULL,
    "version" INTEGER NOT NULL DEFAULT 0,
    "alias" TEXT NOT NULL DEFAULT '',
    "previous_version" INTEGER NOT NULL DEFAULT 0,
    "actor" TEXT NOT NULL DEFAULT '',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "model_events_model_id_sequence_idx" ON "model_events"("model_id", "sequence");

CREATE TABLE "predictor_reports" (
    "predictor" TEXT NOT NULL PRIMARY KEY,
    "served" JSONB NOT NULL,
    "reported_at" TIMESTAMP(3) NOT NULL
);
