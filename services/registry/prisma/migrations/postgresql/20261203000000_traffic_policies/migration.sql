-- Traffic policies on aliases (registry.proto SetTrafficPolicy): the policy as protobuf JSON,
-- NULL for an alias without one; the alias history keeps each change's policies and reason.
ALTER TABLE "model_aliases" ADD COLUMN "policy" TEXT;
ALTER TABLE "model_events" ADD COLUMN "policy" TEXT;
ALTER TABLE "model_events" ADD COLUMN "previous_policy" TEXT;
ALTER TABLE "model_events" ADD COLUMN "reason" TEXT NOT NULL DEFAULT '';
