-- Every setting: its default, that it applies at call time, and that a bad
-- value is refused when it is set.
LOAD 'castle_sessions';
SELECT name, setting, unit, boot_val, min_val, max_val, context
  FROM pg_settings WHERE name LIKE 'castle.%' ORDER BY name;
-- token_prefix
SET castle.token_prefix = 'myapp_';
SELECT castle.create_session('frank') AS pfx \gset
SELECT left(:'pfx', 6) AS prefix, (castle.authenticate(:'pfx')).user_id;
RESET castle.token_prefix;
SELECT refusal(format('SELECT castle.authenticate(%L)', :'pfx')) AS old_prefix_after_reset;
SET castle.token_prefix = 'a.b';
SET castle.token_prefix = 'with space';
SET castle.token_prefix = '';
SELECT castle.create_session('frank') AS nopfx \gset
SELECT left(:'nopfx', 4) <> 'oat_' AS no_prefix, (castle.authenticate(:'nopfx')).user_id;
RESET castle.token_prefix;
-- secret_size: at least 22 characters (132 bits)
SET castle.secret_size = 21;
SET castle.secret_size = 22;
SELECT castle.create_session('frank') AS small \gset
SELECT (castle.authenticate(:'small')).user_id AS small_secret_user;
SET castle.secret_size = 200;
SELECT castle.create_session('frank') AS large \gset
SELECT (castle.authenticate(:'large')).user_id AS large_secret_user;
-- tokens issued under one secret_size keep working under another
RESET castle.secret_size;
SELECT (castle.authenticate(:'small')).user_id AS small_still_valid;
SET castle.secret_size = 'lots';
-- invalid_message: the one message every refusal carries
SET castle.invalid_message = 'Please sign in again';
SELECT refusal($$SELECT castle.authenticate('nope')$$);
SET castle.invalid_message = '';
RESET castle.invalid_message;
-- default_ttl: seconds with units, used when ttl is NULL; 0 = never expires
SET castle.default_ttl = '2h';
SHOW castle.default_ttl;
SELECT castle.create_session('frank') AS ttl_tok \gset
SELECT expires_at = created_at + interval '2 hours' AS expires_in_two_hours FROM castle.authenticate(:'ttl_tok');
SELECT castle.create_session('frank', '5 minutes') AS explicit_tok \gset
SELECT expires_at = created_at + interval '5 minutes' AS explicit_ttl_wins FROM castle.authenticate(:'explicit_tok');
-- refused on every major (18 words the range message differently: the SQLSTATE only)
\set VERBOSITY sqlstate
SET castle.default_ttl = -1;
\set VERBOSITY default
SET castle.default_ttl = '1 fortnight';
RESET castle.default_ttl;
-- max_sessions
SET castle.max_sessions = -1;
-- a misspelt castle.* setting is refused rather than kept as a placeholder
SET castle.max_session = 3;
-- settings at the role and database level
CREATE ROLE castle_settings_role;
ALTER ROLE castle_settings_role SET castle.max_sessions = 5;
SELECT rolconfig FROM pg_roles WHERE rolname = 'castle_settings_role';
DROP ROLE castle_settings_role;
-- the limits are superuser-set: a role that may only call the functions cannot
-- lift them for its own calls, nor bring back an old prefix after an incident
CREATE ROLE regress_castle_limited;
SET ROLE regress_castle_limited;
SET castle.max_sessions = 0;
SET castle.idle_timeout = 0;
SET castle.default_ttl = '1d';
SET castle.token_prefix = 'mine_';
SET castle.secret_size = 22;
SET castle.touch_interval = 0;
SET castle.invalid_message = 'expired';
SHOW castle.token_prefix;
RESET ROLE;
DROP ROLE regress_castle_limited;
