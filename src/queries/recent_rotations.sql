-- How many tokens family $1 rotated away since $2: what it remembers as
-- copies whatever else it forgets.
SELECT pg_catalog.count(*)
  FROM (SELECT FROM castle.sessions AS f WHERE f.id = $1 AND f.rotated_at >= $2
        UNION ALL
        SELECT FROM castle.sessions AS f WHERE f.family_id = $1 AND f.rotated_at >= $2) AS r
