-- Rollout events in the event log (ModelEvent.rollout_id, rollout_state).
ALTER TABLE "model_events" ADD COLUMN "rollout_id" TEXT NOT NULL DEFAULT '';
ALTER TABLE "model_events" ADD COLUMN "rollout_state" TEXT NOT NULL DEFAULT '';

-- Webhooks (registry.proto CreateWebhook): each follows the event log from its cursor; the
-- deliveries are the outbox and the delivery log.
CREATE TABLE "webhooks" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "url" TEXT NOT NULL,
    "secret" TEXT NOT NULL,
    "events" TEXT NOT NULL,
    "description" TEXT NOT NULL DEFAULT '',
    "cursor" INTEGER NOT NULL,
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updated_at" TIMESTAMP(3) NOT NULL
);
CREATE TABLE "webhook_deliveries" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "webhook_id" TEXT NOT NULL REFERENCES "webhooks" ("id") ON DELETE CASCADE,
    "event_sequence" INTEGER NOT NULL,
    "event_type" TEXT NOT NULL,
    "payload" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "attempts" INTEGER NOT NULL DEFAULT 0,
    "next_attempt_at" TIMESTAMP(3) NOT NULL,
    "last_status" INTEGER NOT NULL DEFAULT 0,
    "last_error" TEXT NOT NULL DEFAULT '',
    "delivered_at" TIMESTAMP(3),
    "redelivery_of" TEXT NOT NULL DEFAULT '',
    "created_at" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP
);
CREATE INDEX "webhook_deliveries_state_next_attempt_at_idx" ON "webhook_deliveries" ("state", "next_attempt_at");
CREATE INDEX "webhook_deliveries_webhook_id_created_at_idx" ON "webhook_deliveries" ("webhook_id", "created_at");
