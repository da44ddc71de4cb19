-- PL/Proxy's own cost: a call to shard 0 that does nothing there (the router's ceiling)
SELECT bench_empty_hop(1);
