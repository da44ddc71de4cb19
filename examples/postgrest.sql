-- PostgREST: bind the caller's session to each request's transaction, with
--     db-pre-request = "public.castle_pre_request"
-- Load after examples/schema.sql. The token travels in a header of its own
-- because PostgREST verifies any "Authorization: Bearer" header as a JWT
-- before this function runs.
CREATE FUNCTION public.castle_pre_request() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    token text := current_setting('request.headers', true)::json ->> 'x-session-token';
BEGIN
    -- no header: an anonymous request, castle.user_id() stays NULL;
    -- a bad token: castle.login raises 28000, which PostgREST answers with 403
    IF token IS NOT NULL THEN
        PERFORM castle.login(token);
    END IF;
END $$;

-- PostgREST runs each request as its db-anon-role (no JWT means no other
-- role); here that is notes_app, the request role (castle.grant_request_role).
GRANT EXECUTE ON FUNCTION public.castle_pre_request() TO notes_app;
