-- ModelRegistry tables (PostgreSQL). Kept in step with ../../../schema.prisma by hand; the
-- registry tests check every field of every model against a migrated database.
CREATE TABLE "projects" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "name" TEXT NOT NULL,
    "description" TEXT NOT NULL DEFAULT '',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL
);
CREATE UNIQUE INDEX "projects_name_key" ON "projects"("name");

CREATE TABLE "models" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "project_id" TEXT NOT NULL REFERENCES "projects" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "name" TEXT NOT NULL,
    "description" TEXT NOT NULL DEFAULT '',
    "tags" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL
);
CREATE UNIQUE INDEX "models_project_id_name_key" ON "models"("project_id", "name");

CREATE TABLE "experiments" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "model_id" TEXT NOT NULL REFERENCES "models" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "model_version_id" TEXT NOT NULL DEFAULT '',
    "parameters" JSONB NOT NULL DEFAULT '{}',
    "training_dataset" TEXT NOT NULL DEFAULT '',
    "validation_dataset" TEXT NOT NULL DEFAULT '',
    "test_dataset" TEXT NOT NULL DEFAULT '',
    "evaluations" JSONB NOT NULL DEFAULT '{}',
    "artifact_file_paths" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL
);
CREATE INDEX "experiments_model_id_created_at_id_idx" ON "experiments"("model_id", "created_at", "id");
CREATE INDEX "experiments_model_version_id_idx" ON "experiments"("model_version_id");

CREATE TABLE "model_versions" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "model_id" TEXT NOT NULL REFERENCES "models" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "version" INTEGER NOT NULL,
    "source_uri" TEXT NOT NULL,
    "description" TEXT NOT NULL DEFAULT '',
    "experiment_id" TEXT NOT NULL DEFAULT '',
    "status" TEXT NOT NULL DEFAULT 'READY',
    "tags" JSONB NOT NULL DEFAULT '{}',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL
);
CREATE UNIQUE INDEX "model_versions_model_id_version_key" ON "model_versions"("model_id", "version");

CREATE TABLE "model_aliases" (
    "model_id" TEXT NOT NULL REFERENCES "models" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "alias" TEXT NOT NULL,
    "version_id" TEXT NOT NULL REFERENCES "model_versions" ("id") ON DELETE RESTRICT ON UPDATE CASCADE,
    "updated_at" TIMESTAMP(3) NOT NULL,
    PRIMARY KEY ("model_id", "alias")
);
