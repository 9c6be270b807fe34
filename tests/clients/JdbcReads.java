// Reads with pgjdbc for tests/tests/shadow_limited.rs, each printing what it got.
// Run as a single source file: java -cp postgresql.jar tests/clients/JdbcReads.java MODE
// Connection from DW_HOST, DW_PORT, DW_USER, DW_PASSWORD, DW_DB.
//
// `single`: rows 7, 7, 7 and 8 of table `probe`, each read with executeQuery in autocommit
// mode, and with executeQuery and setFetchSize(1) in a transaction (the driver binds a named
// portal and executes it 1 row at a time).
// `chunks`: table `wide` three times with setFetchSize(10) in a transaction.
import java.sql.*;
import java.util.Properties;

public class JdbcReads {
    static final int[] IDS = {7, 7, 7, 8};

    static void read(Connection c, String sql, int fetchSize, String what) throws SQLException {
        try (PreparedStatement q = c.prepareStatement(sql)) {
            q.setFetchSize(fetchSize);
            for (int i : IDS) {
                q.setInt(1, i);
                try (ResultSet rs = q.executeQuery()) {
                    while (rs.next()) System.out.println(what + " " + rs.getInt(1) + " " + rs.getString(2));
                }
            }
        }
    }

    public static void main(String[] args) throws Exception {
        String url = "jdbc:postgresql://" + System.getenv("DW_HOST") + ":" + System.getenv("DW_PORT") + "/"
            + System.getenv("DW_DB");
        Properties p = new Properties();
        p.setProperty("user", System.getenv("DW_USER"));
        p.setProperty("password", System.getenv("DW_PASSWORD"));
        p.setProperty("sslmode", "disable");
        try (Connection c = DriverManager.getConnection(url, p)) {
            if (args[0].equals("single")) {
                read(c, "SELECT id, v AS by_execute_query FROM probe WHERE id = ?", 0, "executeQuery");
                c.setAutoCommit(false);
                read(c, "SELECT id, v AS by_fetch_size FROM probe WHERE id = ?", 1, "fetch size 1");
                c.commit();
            } else if (args[0].equals("chunks")) {
                c.setAutoCommit(false);
                try (PreparedStatement q = c.prepareStatement("SELECT id, v AS by_jdbc FROM wide")) {
                    q.setFetchSize(10);
                    for (int k = 0; k < 3; k++) {
                        int n = 0;
                        try (ResultSet rs = q.executeQuery()) {
                            while (rs.next()) n++;
                        }
                        System.out.println("chunked " + n);
                    }
                }
                c.commit();
            } else {
                throw new IllegalArgumentException("unknown mode " + args[0]);
            }
        }
    }
}
