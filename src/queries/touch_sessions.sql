-- Record uses: session $1[i] used at $2[i], never moving used_at back (a
-- long request may commit after a later use was recorded). A session some
-- other transaction is writing right now is skipped rather than waited for.
-- Where the catalog allows, store::touch_directly does this instead, with
-- the same rules (store::moves_used_at).
UPDATE castle.sessions AS s
   SET used_at = u.at, updated_at = GREATEST(s.updated_at, u.at)
  FROM (SELECT l.id, t.at
          FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]),
                         pg_catalog.unnest($2::pg_catalog.timestamptz[])) AS t (id, at)
          JOIN castle.sessions AS l ON l.id = t.id
           FOR NO KEY UPDATE OF l SKIP LOCKED) AS u
 WHERE s.id = u.id
   AND (s.used_at IS NULL OR s.used_at < u.at)
