// Runs the JDBC recipe of docs/recipes.md (CastleJdbc, compiled beside it) and
// prints what tests/clients/test_recipes.py checks, as JSON.
//   java Drive check BAD_TOKEN   the recipe's five points
//   java Drive down TOKEN        authenticate against CASTLE_REQUEST_URL (nothing listening)
import java.sql.SQLException;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

public final class Drive {
    static String q(Object o) {
        if (o == null) return "null";
        if (o instanceof Number) return o.toString();
        return '"' + o.toString().replace("\\", "\\\\").replace("\"", "\\\"") + '"';
    }

    static String obj(Object... kv) {
        StringBuilder b = new StringBuilder("{");
        for (int i = 0; i < kv.length; i += 2) {
            if (i > 0) b.append(',');
            b.append(q(kv[i])).append(':').append(kv[i + 1] instanceof Raw r ? r.json() : q(kv[i + 1]));
        }
        return b.append('}').toString();
    }

    record Raw(String json) {}

    public static void main(String[] args) throws Exception {
        if (args[0].equals("down")) {
            try (java.sql.Connection c = CastleJdbc.requestConnection()) {
                CastleJdbc.authenticate(c, args[1]);
                System.out.println(obj("down", "answered"));
            } catch (SQLException e) {
                System.out.println(obj("down", new Raw(obj("status", CastleJdbc.httpStatus(e), "code", e.getSQLState()))));
            }
            return;
        }
        String token;
        try (java.sql.Connection c = CastleJdbc.signInConnection()) {
            token = CastleJdbc.signIn(c, 1, "{\"device\": \"phone\", \"n\": 1}");
        }
        String session;
        String refused;
        String notes;
        try (java.sql.Connection c = CastleJdbc.requestConnection()) {
            CastleJdbc.Session s = CastleJdbc.authenticate(c, token);
            session = obj("id", Long.toString(s.id()), "userId", s.userId(),
                "createdAtOffset", s.createdAt().getOffset().toString(),
                "lifetimeSeconds", Duration.between(s.createdAt(), s.expiresAt()).getSeconds(),
                "data", s.data());
            notes = String.join("|", CastleJdbc.myNotes(c, token));
            try {
                CastleJdbc.authenticate(c, args[1]);
                refused = q("accepted");
            } catch (SQLException e) {
                refused = obj("status", CastleJdbc.httpStatus(e), "code", e.getSQLState(), "type", e.getClass().getName());
            }
        }
        // three connections at once, each running every statement a dozen times (past
        // prepareThreshold), on pgbouncer's two server connections
        ExecutorService pool = Executors.newFixedThreadPool(3);
        List<Future<String>> runs = new ArrayList<>();
        for (int t = 0; t < 3; t++) {
            runs.add(pool.submit(() -> {
                try (java.sql.Connection c = CastleJdbc.requestConnection()) {
                    String seen = "";
                    for (int i = 0; i < 12; i++) {
                        seen = CastleJdbc.authenticate(c, token).id() + " " + CastleJdbc.myNotes(c, token);
                    }
                    return seen;
                }
            }));
        }
        Set<String> seen = new TreeSet<>();
        for (Future<String> f : runs) seen.add(f.get());
        pool.shutdown();
        System.out.println(obj("tokenId", token, "session", new Raw(session), "concurrent", String.join("|", seen),
            "notes", notes, "refused", new Raw(refused)));
    }
}
