-- Who created each version (ModelVersion.creator): the token's name and the declared actor,
-- as the alias history records them. Versions created before stay "".
ALTER TABLE "model_versions" ADD COLUMN "created_by" TEXT NOT NULL DEFAULT '';
