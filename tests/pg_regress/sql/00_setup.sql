-- Runs first. pg_regress has already created the extension (--load-extension).
-- refusal(): how a call failed, as the client sees it: SQLSTATE, message, and
-- whether any detail or hint came along (none may, for a refused token).
CREATE FUNCTION public.refusal(call text) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    detail text;
    hint text;
BEGIN
    EXECUTE call;
    RETURN 'no error';
EXCEPTION WHEN OTHERS THEN
    GET STACKED DIAGNOSTICS detail = PG_EXCEPTION_DETAIL, hint = PG_EXCEPTION_HINT;
    RETURN SQLSTATE || ': ' || SQLERRM
        || CASE WHEN detail <> '' THEN ' DETAIL: ' || detail ELSE '' END
        || CASE WHEN hint <> '' THEN ' HINT: ' || hint ELSE '' END;
END $$;
-- wait_until(): polls (up to 10 s) for what a standing worker does in a
-- transaction of its own (a family's revocation, a use recorded).
CREATE FUNCTION public.wait_until(condition text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    done boolean;
BEGIN
    FOR i IN 1..200 LOOP
        EXECUTE 'SELECT ' || condition INTO done;
        IF done THEN RETURN true; END IF;
        PERFORM pg_sleep(0.05);
    END LOOP;
    RETURN false;
END $$;
SELECT extname, extversion, nspname AS schema
  FROM pg_extension JOIN pg_namespace n ON n.oid = extnamespace
 WHERE extname = 'castle_sessions';
