-- authenticate and verify: the round trip, and every way a token is refused.
-- Every refusal is SQLSTATE 28000 with castle.invalid_message and nothing else.
SELECT castle.create_session('alice', '1 hour', '{"ua": "curl"}') AS good \gset
SELECT user_id, data, expires_at > now() AS live, used_at IS NULL AS first_use FROM castle.authenticate(:'good');
-- the use is recorded after that statement's transaction commits, by a
-- standing worker (the request itself writes nothing)
SELECT (castle.verify(:'good')).id AS good_id \gset
SELECT wait_until(format('used_at IS NOT NULL FROM castle.sessions WHERE id = %s', :good_id)) AS use_recorded;
SELECT (castle.verify(:'good')).user_id AS verified_user;
-- the returned row never carries the hash
SELECT attname FROM pg_attribute WHERE attrelid = 'castle.session'::regclass AND attnum > 0 ORDER BY attnum;
-- pieces of a good token, to build bad ones from
SELECT split_part(substr(:'good', 5), '.', 1) AS id_part, split_part(:'good', '.', 2) AS secret_part \gset
CREATE TEMP TABLE bad_tokens (why text, token text);
INSERT INTO bad_tokens VALUES
    ('null',                      NULL),
    ('empty',                     ''),
    ('wrong prefix',              'xat_' || substr(:'good', 5)),
    ('no prefix',                 substr(:'good', 5)),
    ('no dot',                    'oat_' || :'id_part' || :'secret_part'),
    ('two dots',                  :'good' || '.x'),
    ('padded id',                 'oat_MQ==.' || :'secret_part'),
    ('non-canonical id (MR)',     'oat_MR.' || :'secret_part'),
    ('id not base64',             'oat_*.' || :'secret_part'),
    ('id zero',                   'oat_MA.' || :'secret_part'),
    ('id with leading zero',      'oat_MDE.' || :'secret_part'),
    ('negative id',               'oat_LTE.' || :'secret_part'),
    ('id over bigint',            'oat_OTIyMzM3MjAzNjg1NDc3NTgwOA.' || :'secret_part'),
    ('id with a space',           'oat_IDE.' || :'secret_part'),
    ('unknown id',                'oat_OTk5OTk5OQ.' || :'secret_part'),
    ('secret padded',             :'good' || '='),
    ('secret not base64',         'oat_' || :'id_part' || '.' || :'secret_part' || '!'),
    ('secret truncated',          left(:'good', length(:'good') - 4)),
    ('bad checksum',              'oat_' || :'id_part' || '.' || translate(left(:'secret_part', 8), 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_', 'BCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_A') || substr(:'secret_part', 9)),
    ('very long',                 :'good' || repeat('A', 100000));
-- a token with a valid checksum but another secret: refused by the hash compare
SELECT castle.create_session('mallory') AS other \gset
INSERT INTO bad_tokens VALUES ('wrong secret', 'oat_' || :'id_part' || '.' || split_part(:'other', '.', 2));
SELECT why, refusal(format('SELECT castle.authenticate(%L)', token)) AS authenticate,
       (castle.verify(token)).id IS NULL AS verify_is_null
  FROM bad_tokens ORDER BY why;
-- Expired: refused like any other bad token
SELECT castle.create_session('bob', '1 hour') AS soon_expired \gset
SELECT (castle.authenticate(:'soon_expired')).id AS soon_expired_id \gset
UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE id = :soon_expired_id;
SELECT refusal(format('SELECT castle.authenticate(%L)', :'soon_expired')) AS expired,
       (castle.verify(:'soon_expired')).id IS NULL AS verify_is_null;
-- the good token still works after all that
SELECT user_id FROM castle.authenticate(:'good');
-- refusals write nothing and take no transaction id: authenticate is read-only
BEGIN;
SELECT (castle.verify(:'good')).id IS NOT NULL AS ok, (castle.verify('oat_MQ.eA')).id IS NULL AS refused;
SELECT pg_current_xact_id_if_assigned() IS NULL AS no_xid_taken;
COMMIT;
-- it runs in a read-only transaction too (as on a hot standby)
BEGIN READ ONLY;
SELECT user_id FROM castle.authenticate(:'good');
COMMIT;
