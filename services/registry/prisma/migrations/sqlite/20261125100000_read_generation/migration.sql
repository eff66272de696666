-- The read generation: one row whose number every write that can change a cached read
-- (versions, aliases, version tags) raises in its own transaction. Registry processes keep
-- alias lookups in memory and check this number before answering from memory (read-cache.ts).
CREATE TABLE "read_generation" (
    "id" INTEGER NOT NULL PRIMARY KEY,
    "generation" BIGINT NOT NULL DEFAULT 0
);
INSERT INTO "read_generation" ("id", "generation") VALUES (1, 0);
