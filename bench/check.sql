-- Run once before measuring: the PL/pgSQL implementation speaks the same
-- format as the extension, in both directions, and both refuse a forged token.
DO $$
DECLARE
    from_castle text := castle.create_session('check');
    from_plpgsql text := bench_plpgsql.create_session('check');
BEGIN
    ASSERT bench_plpgsql.crc32(repeat('A', 64)) = 1095524924, 'crc32 known vector';
    ASSERT (castle.verify(from_plpgsql)).user_id = 'check', 'castle accepts a PL/pgSQL token';
    ASSERT (bench_plpgsql.verify(from_castle)).user_id = 'check', 'PL/pgSQL accepts a castle token';
    ASSERT (castle.authenticate(from_plpgsql)).user_id = 'check', 'castle.authenticate on a PL/pgSQL token';
    ASSERT (bench_plpgsql.authenticate(from_castle)).user_id = 'check', 'PL/pgSQL authenticate on a castle token';
    ASSERT (castle.verify(bench.forge(from_castle))).id IS NULL, 'castle refuses a forged token';
    ASSERT (bench_plpgsql.verify(bench.forge(from_castle))).id IS NULL, 'PL/pgSQL refuses a forged token';
    ASSERT (bench_plpgsql.verify(bench.forge(from_plpgsql))).id IS NULL, 'PL/pgSQL refuses its own forged token';
    DELETE FROM castle.sessions WHERE user_id = 'check';
    -- a sample of the loaded tokens: good ones pass and forged ones fail, for both
    IF EXISTS (SELECT FROM bench.tokens
                WHERE n % 997 = 1
                  AND ((castle.verify(token)).id IS DISTINCT FROM id
                       OR (bench_plpgsql.verify(token)).id IS DISTINCT FROM id
                       OR (castle.verify(forged)).id IS NOT NULL
                       OR (bench_plpgsql.verify(forged)).id IS NOT NULL)) THEN
        RAISE EXCEPTION 'bench.tokens holds a token that does not check out';
    END IF;
END $$;

