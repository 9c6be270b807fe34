// An application written with pgjdbc (the PostgreSQL JDBC driver), run by
// tests/tests/proxy_drivers.rs once through dualwrite-proxy and once directly against
// PostgreSQL: it prints a transcript of everything it saw, and the two must be identical.
//
// Run as a single source file: java -cp postgresql.jar tests/clients/JdbcApp.java
// Connection from the environment: DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB, and
// DW_SSLROOTCERT for TLS with the certificate and name verified.
// Exercises what pgjdbc does on the wire: statements turned into named server-side prepared
// statements after prepareThreshold executions (with binary transfer), executeBatch (many
// Bind/Execute before one Sync), generated keys (RETURNING), fetch size (portals executed with
// a row limit, PortalSuspended), savepoints, errors with SQLSTATE, CopyManager in and out,
// DatabaseMetaData catalog queries, LISTEN/NOTIFY, and with DW_PROBE_ID one row read after the
// test changed it on the target only.
import java.io.ByteArrayOutputStream;
import java.io.StringReader;
import java.math.BigDecimal;
import java.sql.*;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;
import org.postgresql.PGConnection;
import org.postgresql.PGNotification;
import org.postgresql.copy.CopyManager;
import org.postgresql.util.PGobject;

public class JdbcApp {
    static final List<String> out = new ArrayList<>();

    static void say(Object... parts) {
        StringBuilder b = new StringBuilder();
        for (Object p : parts) {
            if (b.length() > 0) b.append(' ');
            b.append(p);
        }
        out.add(b.toString());
    }

    static Connection connect() throws SQLException {
        String url = "jdbc:postgresql://" + System.getenv("DW_HOST") + ":" + System.getenv("DW_PORT") + "/"
            + System.getenv("DW_DB");
        Properties p = new Properties();
        p.setProperty("user", System.getenv("DW_USER"));
        p.setProperty("password", System.getenv("DW_PASSWORD"));
        // DW_SSLROOTCERT: TLS, verifying the server's certificate and name against it.
        String root = System.getenv("DW_SSLROOTCERT");
        if (root != null) {
            p.setProperty("sslmode", "verify-full");
            p.setProperty("sslrootcert", root);
        } else {
            p.setProperty("sslmode", "disable");
        }
        p.setProperty("ApplicationName", "jdbc-app");
        p.setProperty("prepareThreshold", "3");
        return DriverManager.getConnection(url, p);
    }

    static String row(ResultSet rs) throws SQLException {
        StringBuilder b = new StringBuilder();
        int n = rs.getMetaData().getColumnCount();
        for (int i = 1; i <= n; i++) {
            if (i > 1) b.append(" | ");
            Object v = rs.getObject(i);
            if (v instanceof byte[]) {
                for (byte x : (byte[]) v) b.append(String.format("%02x", x));
            } else if (v instanceof Array) {
                b.append(java.util.Arrays.toString((Object[]) ((Array) v).getArray()));
            } else if (v instanceof Timestamp) {
                b.append(((Timestamp) v).toInstant());
            } else {
                b.append(v);
            }
        }
        return b.toString();
    }

    public static void main(String[] args) throws Exception {
        try (Connection c = connect()) {
            try (Statement s = c.createStatement()) {
                s.execute("CREATE TABLE drv_jdbc (id int PRIMARY KEY, name text, amount numeric(12,2),"
                    + " at timestamptz, data bytea, tags text[], doc jsonb, flag bool)");
            }
            OffsetDateTime t0 = OffsetDateTime.of(2026, 1, 1, 0, 0, 0, 0, ZoneOffset.UTC);

            // One by one past prepareThreshold: the driver switches to a named statement.
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO drv_jdbc VALUES (?, ?, ?, ?, ?, ?, ?, ?)")) {
                for (int i = 1; i <= 40; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "name " + i + " 'quoted' \\ back");
                    ins.setBigDecimal(3, BigDecimal.valueOf(i).divide(BigDecimal.valueOf(4)));
                    ins.setObject(4, t0.plusMinutes(i));
                    ins.setBytes(5, new byte[] {(byte) i, 0, (byte) 255});
                    ins.setArray(6, c.createArrayOf("text", new Object[] {"t" + i, null, "x y"}));
                    PGobject doc = new PGobject();
                    doc.setType("jsonb");
                    doc.setValue("{\"i\": " + i + ", \"s\": \"\u00fc\"}");
                    ins.setObject(7, doc);
                    ins.setBoolean(8, i % 2 == 0);
                    say("insert", ins.executeUpdate());
                }
            }

            // executeBatch: many Bind/Execute before one Sync, in a transaction.
            c.setAutoCommit(false);
            try (PreparedStatement ins = c.prepareStatement("INSERT INTO drv_jdbc (id, name, amount, flag) VALUES (?, ?, ?, ?)")) {
                for (int i = 41; i <= 100; i++) {
                    ins.setInt(1, i);
                    ins.setString(2, "batched " + i);
                    ins.setBigDecimal(3, new BigDecimal(i + ".10"));
                    ins.setBoolean(4, i % 3 == 0);
                    ins.addBatch();
                }
                int[] counts = ins.executeBatch();
                say("batch", counts.length, java.util.Arrays.stream(counts).sum());
            }
            c.commit();

            // Reads prepared and executed past the threshold (binary transfer), and a fetch size
            // that makes the driver fetch through a portal a few rows at a time.
            try (PreparedStatement q = c.prepareStatement("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_jdbc WHERE id = ?")) {
                for (int i : new int[] {3, 7, 9, 11, 40, 99}) {
                    q.setInt(1, i);
                    try (ResultSet rs = q.executeQuery()) {
                        while (rs.next()) say("select", row(rs));
                    }
                }
            }
            try (PreparedStatement q = c.prepareStatement("SELECT id FROM drv_jdbc WHERE id < ? ORDER BY id")) {
                q.setFetchSize(7);
                q.setInt(1, 60);
                int n = 0, last = 0;
                try (ResultSet rs = q.executeQuery()) {
                    while (rs.next()) {
                        n++;
                        last = rs.getInt(1);
                    }
                }
                say("fetch size", n, last);
            }
            c.commit();

            // Generated keys (RETURNING), savepoints and an error with its SQLSTATE.
            try (PreparedStatement up = c.prepareStatement("UPDATE drv_jdbc SET amount = amount * 2 WHERE id IN (?, ?)",
                    new String[] {"id", "amount"})) {
                up.setInt(1, 5);
                up.setInt(2, 6);
                say("updated", up.executeUpdate());
                try (ResultSet keys = up.getGeneratedKeys()) {
                    while (keys.next()) say("key", row(keys));
                }
            }
            Savepoint sp = c.setSavepoint("sp1");
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO drv_jdbc (id, name) VALUES (1, 'duplicate')");
            } catch (SQLException e) {
                say("error", e.getSQLState(), e.getMessage().split("\n")[0]);
                c.rollback(sp);
            }
            try (Statement s = c.createStatement()) {
                s.executeUpdate("INSERT INTO drv_jdbc (id, name) VALUES (1001, 'kept')");
            }
            c.commit();
            try (Statement s = c.createStatement()) {
                say("deleted", s.executeUpdate("DELETE FROM drv_jdbc WHERE id > 90"));
            }
            c.rollback();
            c.setAutoCommit(true);

            // COPY through the driver's CopyManager.
            CopyManager copy = c.unwrap(PGConnection.class).getCopyAPI();
            StringBuilder data = new StringBuilder();
            for (int i = 2000; i < 2300; i++) data.append(i).append("\tcopied ").append(i).append("\t{a,\"b,c\"}\n");
            say("copy in", copy.copyIn("COPY drv_jdbc (id, name, tags) FROM STDIN", new StringReader(data.toString())));
            ByteArrayOutputStream copied = new ByteArrayOutputStream();
            say("copy out", copy.copyOut("COPY (SELECT id, name, tags FROM drv_jdbc WHERE id BETWEEN 2000 AND 2002 ORDER BY id) TO STDOUT (FORMAT csv)", copied));
            say("copy out data", copied.toString("UTF-8").replace("\n", "\\n"));

            // Catalog queries the driver issues for DatabaseMetaData.
            try (ResultSet rs = c.getMetaData().getColumns(null, "public", "drv_jdbc", null)) {
                List<String> cols = new ArrayList<>();
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME"));
                say("columns", cols);
            }
            try (ResultSet rs = c.getMetaData().getPrimaryKeys(null, "public", "drv_jdbc")) {
                while (rs.next()) say("primary key", rs.getString("COLUMN_NAME"), rs.getString("PK_NAME"));
            }

            // An error outside a transaction leaves the session usable.
            try (Statement s = c.createStatement()) {
                s.executeQuery("SELECT * FROM no_such_table");
            } catch (SQLException e) {
                say("error", e.getSQLState(), e.getMessage().split("\n")[0]);
            }

            // LISTEN/NOTIFY between two connections.
            try (Connection l = connect()) {
                try (Statement s = l.createStatement()) {
                    s.execute("LISTEN drv_channel");
                }
                try (Statement s = c.createStatement()) {
                    s.execute("NOTIFY drv_channel, 'hello from jdbc'");
                }
                PGNotification[] got = l.unwrap(PGConnection.class).getNotifications(10000);
                for (PGNotification n : got) say("notify", n.getName(), n.getParameter());
            }

            try (Statement s = c.createStatement();
                 ResultSet rs = s.executeQuery("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_jdbc ORDER BY id")) {
                while (rs.next()) say("final", row(rs));
            }

            // DW_PROBE_ID: say READY, wait for a line on stdin (meanwhile the test changes that
            // row on the target only), then read the row with the usual single-row query. The
            // answer is the source's; the proxy's shadow report flags the read.
            String probe = System.getenv("DW_PROBE_ID");
            if (probe != null) {
                System.out.println("READY");
                System.out.flush();
                new java.io.BufferedReader(new java.io.InputStreamReader(System.in)).readLine();
                try (PreparedStatement q = c.prepareStatement("SELECT id, name, amount, at, data, tags, doc, flag FROM drv_jdbc WHERE id = ?")) {
                    q.setInt(1, Integer.parseInt(probe));
                    try (ResultSet rs = q.executeQuery()) {
                        while (rs.next()) say("probe", row(rs));
                    }
                }
            }
        }
        System.out.println(String.join("\n", out));
    }
}
