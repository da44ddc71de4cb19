-- Thousands of mutated tokens through authenticate and verify: none but the
-- genuine token passes, and every refusal is the same 28000 with one message,
-- no detail and no hint. (The codec alone takes a million in src/token.rs.)
SELECT setseed(0.42);
CREATE TEMP TABLE genuine AS
    SELECT castle.create_session('hostile-' || i, '1 hour') AS token FROM generate_series(1, 20) AS i;
CREATE TEMP TABLE mutants AS
SELECT g.token AS original,
       CASE k % 5
         WHEN 0 THEN overlay(g.token PLACING chr(45 + (random() * 77)::int) FROM 1 + (random() * (length(g.token) - 1))::int FOR 1)
         WHEN 1 THEN left(g.token, (random() * length(g.token))::int)
         WHEN 2 THEN overlay(g.token PLACING '' FROM 1 + (random() * (length(g.token) - 1))::int FOR 1)
         WHEN 3 THEN g.token || chr(48 + (random() * 74)::int)
         ELSE        reverse(g.token)
       END AS token
  FROM genuine AS g, generate_series(1, 500) AS k;
SELECT count(*) AS mutants, count(*) FILTER (WHERE token <> original) > 9500 AS nearly_all_changed FROM mutants;
-- verify: only unchanged tokens pass
SELECT count(*) FILTER (WHERE (castle.verify(token)).id IS NOT NULL AND token <> original) AS forged_passed,
       count(*) FILTER (WHERE (castle.verify(token)).id IS NULL AND token = original) AS genuine_refused
  FROM mutants;
-- authenticate: every refusal looks exactly the same
DO $$
DECLARE
    m record;
    outcomes text[] := '{}';
    detail text;
    hint text;
BEGIN
    FOR m IN SELECT token FROM mutants WHERE token <> original LOOP
        BEGIN
            PERFORM castle.authenticate(m.token);
            outcomes := outcomes || 'accepted'::text;
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
            outcomes := outcomes || (SQLSTATE || ' ' || SQLERRM || ' [' || detail || '][' || hint || ']');
        END;
    END LOOP;
    RAISE NOTICE 'distinct outcomes: %', (SELECT array_agg(DISTINCT o) FROM unnest(outcomes) AS o);
END $$;
-- and the genuine tokens still work after all that
SELECT count(*) AS genuine_still_valid FROM genuine WHERE (castle.verify(token)).id IS NOT NULL;
