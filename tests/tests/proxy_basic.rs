//! Pass-through basics with tokio-postgres.

use dualwrite_tests::proxy::passthrough_toml;
use dualwrite_tests::{Cluster, PgBin, ProxyHandle};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_and_extended_queries() {
    let c = Cluster::start(&PgBin::source());
    c.create_db("app");
    c.create_role("app", "app-secret", "");
    c.psql("app", "GRANT ALL ON SCHEMA public TO app");
    let proxy = ProxyHandle::start(&passthrough_toml(&c.url("app"), "app", "app-secret")).await;
    let (client, conn) = tokio_postgres::connect(
        &proxy.url("app", "app-secret", "app"),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    client
        .batch_execute(
            "CREATE TABLE t (id int primary key, v text); INSERT INTO t VALUES (1, 'a'), (2, 'b')",
        )
        .await
        .unwrap();
    let rows = client
        .query("SELECT v FROM t WHERE id = $1", &[&2i32])
        .await
        .unwrap();
    assert_eq!(rows[0].get::<_, String>(0), "b");
    let who: String = client
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app");
    let status = proxy.admin_get("/status").await;
    assert!(status.contains("\"client_connections\":1"), "{status}");
}
