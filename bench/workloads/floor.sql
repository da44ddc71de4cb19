-- the physical floor: the session row by primary key
\set n random(1, :ntokens)
SELECT s.* FROM castle.sessions AS s WHERE s.id = (SELECT t.id FROM bench.tokens AS t WHERE t.n = :n);
