-- Canary rollouts (registry.proto StartRollout): the controller's whole state, so that a
-- registry restarted in the middle resumes each running rollout where it was.
CREATE TABLE "rollouts" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "model_id" TEXT NOT NULL REFERENCES "models" ("id"),
    "alias" TEXT NOT NULL,
    "from_version" INTEGER NOT NULL,
    "to_version" INTEGER NOT NULL,
    "steps" TEXT NOT NULL,
    "step" INTEGER NOT NULL DEFAULT 0,
    "interval_ms" INTEGER NOT NULL,
    "gates" TEXT NOT NULL,
    "rollback_rule" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "last_decision" TEXT NOT NULL DEFAULT '',
    "observation" TEXT,
    "previous_policy" TEXT,
    "actor" TEXT NOT NULL DEFAULT '',
    "step_started_at" DATETIME NOT NULL,
    "next_check_at" DATETIME NOT NULL,
    "created_at" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" DATETIME NOT NULL
);
CREATE INDEX "rollouts_model_id_created_at_idx" ON "rollouts" ("model_id", "created_at");
CREATE INDEX "rollouts_state_next_check_at_idx" ON "rollouts" ("state", "next_check_at");
