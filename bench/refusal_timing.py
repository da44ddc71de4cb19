"""How long a refusal takes, by cause: can a caller tell a reuse from any
other bad token by its timing? (docs/security.md, "Timing of refusals".)

    python bench/refusal_timing.py "host=127.0.0.1 port=25416 user=postgres dbname=castle_py" [SAMPLES]

Prepares SAMPLES families whose token rotated away is past its grace (each
reuse is presented once: a second presentation is an unknown id), a live
token with a wrong secret, an unknown id and an expired session; then, on one
connection, times `SELECT castle.authenticate($1)` for each cause in
interleaved rounds (reuse, wrong secret, unknown id, expired), so that load
and caches weigh on every cause alike. Prints each cause's median and 90th
percentile, the ratio of the reuse's median to the others', and the balanced
accuracy of a one-sample threshold classifier telling a reuse from the other
causes, its threshold chosen on half the samples and judged on the other half
(0.5: no better than a coin).
"""
import statistics
import sys
import time

import psycopg


def measure(dsn, samples=300):
    with psycopg.connect(dsn, autocommit=True) as c:
        def create(user):
            return c.execute("SELECT castle.create_session(%s, '1 hour')", (user,)).fetchone()[0]

        reuses = []
        for n in range(samples):
            old = create(f"timing-{n}")
            old_id = c.execute("SELECT (castle.verify(%s)).id", (old,)).fetchone()[0]
            c.execute("SELECT castle.rotate(%s)", (old,))
            c.execute("UPDATE castle.sessions SET rotated_at = now() - interval '1 hour' WHERE id = %s", (old_id,))
            reuses.append(old)
        # well-formed, checksums right: each is refused only after the table is read
        live = create("timing-live")
        other = create("timing-other")
        live_id, live_secret = live.split(".", 1)
        wrong_secret = live_id + "." + other.split(".", 1)[1]
        prefix = c.execute("SHOW castle.token_prefix").fetchone()[0]
        unknown_id = prefix + "OTk5OTk5OTk5OTk." + live_secret  # id 99999999999, never issued here
        expired = create("timing-expired")
        c.execute("UPDATE castle.sessions SET expires_at = now() - interval '1 second' WHERE user_id = 'timing-expired'")

        def elapsed(token):
            start = time.perf_counter()
            try:
                c.execute("SELECT castle.authenticate(%s)", (token,))
            except psycopg.errors.InvalidAuthorizationSpecification:
                pass
            else:
                raise AssertionError("not refused")
            return (time.perf_counter() - start) * 1000

        times = {"reuse": [], "wrong secret": [], "unknown id": [], "expired": []}
        for reuse in reuses:
            times["wrong secret"].append(elapsed(wrong_secret))
            times["unknown id"].append(elapsed(unknown_id))
            times["reuse"].append(elapsed(reuse))
            times["expired"].append(elapsed(expired))
        for user in ("timing-live", "timing-other", "timing-expired"):
            c.execute("SELECT castle.revoke_all(%s::text)", (user,))
        return times


def accuracy_of(t, reuse, others):
    """Balanced accuracy of the rule 'slower than t means a reuse'."""
    hit = sum(x > t for x in reuse) / len(reuse)
    reject = sum(x <= t for x in others) / len(others)
    return (hit + reject) / 2


def balanced_accuracy(reuse, others):
    """What an attacker's threshold rule achieves: the threshold is chosen
    on every other sample and judged on the rest. (The best threshold judged
    on the samples it was chosen on flatters itself: with identical
    distributions it scores about 0.6.)"""
    fit_reuse, fit_others = reuse[::2], others[::2]
    best = max(sorted(set(fit_reuse + fit_others)), key=lambda t: accuracy_of(t, fit_reuse, fit_others))
    return max(0.5, accuracy_of(best, reuse[1::2], others[1::2]))


def report(times):
    others = [x for cause, xs in times.items() if cause != "reuse" for x in xs]
    rows = {cause: (statistics.median(xs), statistics.quantiles(xs, n=10)[8]) for cause, xs in times.items()}
    ratio = rows["reuse"][0] / statistics.median(others)
    return rows, ratio, balanced_accuracy(times["reuse"], others)


if __name__ == "__main__":
    rows, ratio, accuracy = report(measure(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300))
    for cause, (median, p90) in rows.items():
        print(f"{cause:>13}: median {median:.3f} ms, p90 {p90:.3f} ms")
    print(f"reuse / other refusals (medians): {ratio:.2f}x")
    print(f"one-sample classifier, balanced accuracy on held-out samples: {accuracy:.2f}")
