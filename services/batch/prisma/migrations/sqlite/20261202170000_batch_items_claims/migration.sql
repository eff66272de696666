-- The pending items by id: a claim takes the oldest ones without stepping over every item
-- already predicted (services/batch/item-store.ts, claim). Not in schema.prisma, which has no
-- partial indexes: kept here by hand.
CREATE INDEX "batch_items_pending_id_idx" ON "batch_items"("id") WHERE "state" = 'PENDING';
