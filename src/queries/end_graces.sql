-- After revoke_all spared session $1's family, of user $2 (a password
-- change, "sign out everywhere else"): every token that family rotated away loses what is left
-- of its grace, so a copy of one is a reuse from now on and cannot follow
-- the family to its next token.
WITH target AS (
    SELECT COALESCE(s.family_id, s.id) AS family
      FROM castle.sessions AS s
     WHERE s.id = $1 AND s.user_id = $2
)
UPDATE castle.sessions AS s
   SET rotated_at = '-infinity'
  FROM target AS t
 WHERE (s.id = t.family OR s.family_id = t.family)
   AND s.rotated_at IS NOT NULL
   AND s.rotated_at <> '-infinity'
