-- commands: the digest of the engine settings each command was decided under
-- (provenance.config_hash, streams/risk/settings.py), next to rules_hash. Rows archived
-- before it read as ''. (18.16 has no ADD COLUMN IF NOT EXISTS: the migration runner skips
-- this statement when the column is already there.)
ALTER TABLE commands ADD COLUMN config_hash String DEFAULT '' AFTER rules_hash;
