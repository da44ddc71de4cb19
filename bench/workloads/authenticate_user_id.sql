-- castle.authenticate on a real token, one column of its row: no Function Scan
\set n random(1, :ntokens)
SELECT (castle.authenticate((SELECT t.token FROM bench.tokens AS t WHERE t.n = :n))).user_id;
