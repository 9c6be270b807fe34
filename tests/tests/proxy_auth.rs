//! Authentication, TLS on both sides, connection limits, and secrets that never leak.

use dualwrite_common::PgUrl;
use dualwrite_tests::certs::TestCerts;
use dualwrite_tests::proxy::{Passthrough, APP_PASSWORD};
use dualwrite_tests::{Cluster, PgBin, ProxyHandle};

async fn connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

/// A client of the TLS proxy on `port` verifying its certificate and name (`verify-full`).
async fn verified_client(port: u16, certs: &TestCerts) -> tokio_postgres::Client {
    let url: PgUrl = format!(
        "postgres://app:{APP_PASSWORD}@127.0.0.1:{port}/app?sslmode=verify-full&sslrootcert={}",
        certs.ca().display()
    )
    .parse()
    .unwrap();
    dualwrite_common::connect(&url, "test").await.unwrap()
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code()
        .map(|c| c.code().to_string())
        .unwrap_or_else(|| format!("no SQLSTATE: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scram_refuses_wrong_password_and_unknown_user_alike() {
    let p = Passthrough::start().await;
    let wrong = connect(&p.proxy.url("app", "not-it", "app"))
        .await
        .unwrap_err();
    assert_eq!(code(&wrong), "28P01");
    let unknown = connect(&p.proxy.url("mallory", "x", "app"))
        .await
        .unwrap_err();
    assert_eq!(code(&unknown), "28P01");
    let msg = unknown.as_db_error().unwrap().message().to_string();
    assert_eq!(msg, "password authentication failed for user \"mallory\"");
    // The right password works and the backend sees the client's own user.
    let c = connect(&p.url()).await.unwrap();
    let who: String = c
        .query_one("SELECT session_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app");
    // Nothing was leaked to the backend by the failed attempts.
    drop(c);
    p.wait_backend_sessions(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn md5_and_trust_methods() {
    let p = Passthrough::start_with("md5", "").await;
    connect(&p.url())
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
    assert_eq!(
        code(
            &connect(&p.proxy.url("app", "nope", "app"))
                .await
                .unwrap_err()
        ),
        "28P01"
    );

    let t = Passthrough::start_with("trust", "").await;
    // Trust: any password is accepted by the proxy; the backend login uses the configured one.
    connect(&t.proxy.url("app", "whatever", "app"))
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_passwords_per_side_and_backend_refusals_are_relayed() {
    let c = Cluster::start(&PgBin::source());
    c.create_role("report", "backend-pw", "");
    c.create_db("app");
    let toml = format!(
        "[source]\nurl = \"{}\"\n[auth]\nmethod = \"scram-sha-256\"\n\
         users = [{{ name = \"report\", password = \"client-pw\", source_password = \"backend-pw\" }}, \
                  {{ name = \"stale\", password = \"client-pw\", source_password_env = \"DW_TEST_STALE_PW\" }}]\n",
        c.url("app")
    );
    std::env::set_var("DW_TEST_STALE_PW", "wrong-backend-secret");
    c.create_role("stale", "the-real-one", "");
    let proxy = ProxyHandle::start(&toml).await;
    let ok = connect(&proxy.url("report", "client-pw", "app"))
        .await
        .unwrap();
    ok.simple_query("SELECT 1").await.unwrap();
    // The backend refuses the stale password: the client sees the server's own error, and no
    // secret appears in it.
    let err = connect(&proxy.url("stale", "client-pw", "app"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "28P01");
    let text = format!("{err:?}");
    assert!(
        !text.contains("wrong-backend-secret") && !text.contains("client-pw"),
        "{text}"
    );
    // A database that does not exist: the server's 3D000, relayed.
    let err = connect(&proxy.url("report", "client-pw", "nope"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "3D000");
    // /status never shows a password.
    let status = proxy.admin_get("/status").await;
    assert!(
        !status.contains("postgres:postgres") && !status.contains("pw"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_tls_required_and_verified() {
    let certs = TestCerts::new(&["localhost", "127.0.0.1"]);
    let extra = certs.proxy_tls_section();
    let p = Passthrough::start_with("scram-sha-256", &extra).await;
    // Plain connections are refused.
    let err = connect(&p.url()).await.unwrap_err();
    assert_eq!(code(&err), "28000");
    // TLS with full verification of the proxy's certificate works.
    let c = verified_client(p.proxy.port(), &certs).await;
    assert_eq!(
        c.query_one("SELECT 41 + 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    // psql (libpq) too.
    let out = std::process::Command::new(PgBin::source().bin("psql"))
        .env("PGPASSWORD", APP_PASSWORD)
        .arg(format!(
            "host=localhost port={} user=app dbname=app sslmode=verify-full sslrootcert={}",
            p.proxy.port(),
            certs.ca().display()
        ))
        .args(["-X", "-A", "-t", "-c", "SELECT 'over tls'"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "over tls");
}

/// A cluster serving TLS with `certs`, with the role `app` and its database `app`.
fn tls_cluster(certs: &TestCerts) -> Cluster {
    let conf: Vec<String> = certs.server_conf();
    let conf: Vec<&str> = conf.iter().map(String::as_str).collect();
    let c = Cluster::start_with(&PgBin::source(), &conf);
    c.create_role("app", APP_PASSWORD, "");
    c.psql("postgres", "CREATE DATABASE app OWNER app");
    c
}

/// Whether the backend session behind `client` (through the proxy) is encrypted.
async fn backend_uses_tls(client: &tokio_postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_full_checks_the_chain_and_the_name() {
    let certs = TestCerts::new(&["db.internal"]);
    let c = tls_cluster(&certs);
    let proxy_for = |sslmode: &str, ca: &std::path::Path| {
        format!(
            "[source]\nurl = \"postgres://postgres:postgres@127.0.0.1:{}/app?sslmode={sslmode}&sslrootcert={}\"\n\
             [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app\", password = \"{APP_PASSWORD}\" }}]\n",
            c.port,
            ca.display()
        )
    };
    // verify-ca: the chain is ours, the name (127.0.0.1) is not in the certificate: accepted.
    let proxy = ProxyHandle::start(&proxy_for("verify-ca", &certs.ca())).await;
    let client = connect(&proxy.url("app", APP_PASSWORD, "app"))
        .await
        .unwrap();
    let ssl = backend_uses_tls(&client).await;
    assert!(ssl, "backend session must be encrypted");
    // verify-full: the name does not match: refused with 08001, no details leaked.
    let proxy = ProxyHandle::start(&proxy_for("verify-full", &certs.ca())).await;
    let err = connect(&proxy.url("app", APP_PASSWORD, "app"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "08001");
    assert!(!format!("{err:?}").contains("postgres:postgres"));
    // Another CA: refused.
    let other = TestCerts::new(&["127.0.0.1"]);
    let proxy = ProxyHandle::start(&proxy_for("verify-ca", &other.ca())).await;
    assert_eq!(
        code(
            &connect(&proxy.url("app", APP_PASSWORD, "app"))
                .await
                .unwrap_err()
        ),
        "08001"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_client_connections_gives_53300() {
    let p = Passthrough::start_full("scram-sha-256", "max_client_connections = 2", "").await;
    let a = connect(&p.url()).await.unwrap();
    let _b = connect(&p.url()).await.unwrap();
    let err = connect(&p.url()).await.unwrap_err();
    assert_eq!(code(&err), "53300");
    // A slot frees when a client leaves.
    drop(a);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    connect(&p.url())
        .await
        .unwrap()
        .simple_query("SELECT 1")
        .await
        .unwrap();
}

/// PostgreSQL 17's direct TLS (`sslnegotiation=direct`): the client starts TLS with its first
/// byte, no SSLRequest, and must negotiate ALPN "postgresql" (as a PostgreSQL 17+ server
/// demands, against protocol confusion). Without ALPN the proxy closes the connection; a proxy
/// without TLS closes it too (the client expects TLS: no plain error can reach it); the proxy
/// keeps serving others. (psycopg's libpq 18 runs a whole application this way in
/// proxy_drivers.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_tls_needs_alpn_postgresql() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let certs = TestCerts::new(&["localhost", "127.0.0.1"]);
    let extra = certs.proxy_tls_section();
    let p = Passthrough::start_with("scram-sha-256", &extra).await;
    let plain = Passthrough::start().await;
    let url: PgUrl = format!(
        "postgres://app@127.0.0.1:1/app?sslmode=verify-full&sslrootcert={}",
        certs.ca().display()
    )
    .parse()
    .unwrap();
    let base = dualwrite_common::tls::client_config(&url)
        .unwrap()
        .expect("a TLS client config");
    // The first answer to a StartupMessage sent over direct TLS: Some(tag), or None when the
    // proxy closed the connection.
    let first_answer = |port: u16, alpn: Option<&'static [u8]>| {
        let mut cfg = (*base).clone();
        cfg.alpn_protocols = alpn.map(|a| vec![a.to_vec()]).unwrap_or_default();
        async move {
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
            let mut tls = match tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
                .connect(name, tcp)
                .await
            {
                Ok(t) => t,
                Err(_) => return None,
            };
            let startup =
                dualwrite_tests::raw::startup_packet(&[("user", "app"), ("database", "app")]);
            if tls.write_all(&startup).await.is_err() {
                return None;
            }
            let mut tag = [0u8; 1];
            match tls.read(&mut tag).await {
                Ok(1) => Some(tag[0]),
                _ => None,
            }
        }
    };
    // With ALPN "postgresql": authentication starts ('R').
    assert_eq!(
        first_answer(p.proxy.port(), Some(b"postgresql")).await,
        Some(b'R')
    );
    // Without ALPN: closed.
    assert_eq!(first_answer(p.proxy.port(), None).await, None);
    // A proxy with TLS disabled: closed.
    assert_eq!(
        first_answer(plain.proxy.port(), Some(b"postgresql")).await,
        None
    );
    // Both keep serving.
    assert!(connect(&plain.url()).await.is_ok());
    let c = verified_client(p.proxy.port(), &certs).await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

/// libpq's `channel_binding` on the backend URLs: over TLS the proxy binds its SCRAM login to
/// the server's certificate (SCRAM-SHA-256-PLUS) as libpq does; with `require` it refuses a
/// server that did not authenticate it that way (here: no TLS), naming the reason. The proxy's
/// own connections (`check`) honour it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_channel_binding_follows_the_url() {
    let certs = TestCerts::new(&["localhost", "127.0.0.1"]);
    let c = tls_cluster(&certs);
    let proxy_for = |params: &str| {
        format!(
            "[source]\nurl = \"postgres://app:{APP_PASSWORD}@127.0.0.1:{}/app?{params}\"\n\
             [auth]\nmethod = \"scram-sha-256\"\nusers = [{{ name = \"app\", password = \"{APP_PASSWORD}\" }}]\n",
            c.port,
        )
    };
    let bound = proxy_for(&format!(
        "sslmode=verify-full&sslrootcert={}&channel_binding=require",
        certs.ca().display()
    ));
    let proxy = ProxyHandle::start(&bound).await;
    let client = connect(&proxy.url("app", APP_PASSWORD, "app"))
        .await
        .unwrap();
    let ssl = backend_uses_tls(&client).await;
    assert!(ssl);
    let settings = dualwrite_proxy::Settings::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"\"\n{bound}"
    ))
    .unwrap();
    let checked = dualwrite_proxy::check(&settings).await;
    assert!(checked.is_ok(), "{checked:?}");

    // Without TLS nothing can be bound: the backend session is refused, with the reason in
    // the proxy's log (the client sees 08001 and no detail).
    let unbound_toml = proxy_for("sslmode=disable&channel_binding=require");
    let unbound = ProxyHandle::start(&unbound_toml).await;
    let err = connect(&unbound.url("app", APP_PASSWORD, "app"))
        .await
        .unwrap_err();
    assert_eq!(code(&err), "08001", "{err:?}");
    let settings = dualwrite_proxy::Settings::from_toml(&format!(
        "listen = \"127.0.0.1:0\"\nadmin_listen = \"\"\n{unbound_toml}"
    ))
    .unwrap();
    let password = dualwrite_common::Secret::new(APP_PASSWORD);
    let refused = dualwrite_proxy::backend::connect(
        &settings.source,
        "app",
        "app",
        Some(&password),
        &[],
        std::time::Duration::from_secs(10),
    )
    .await
    .err()
    .expect("a session without channel binding is refused");
    assert!(
        refused.to_string().contains("channel_binding=require"),
        "{refused}"
    );
    // The same without channel_binding=require: the session opens.
    let plain = ProxyHandle::start(&proxy_for("sslmode=disable")).await;
    assert!(connect(&plain.url("app", APP_PASSWORD, "app"))
        .await
        .is_ok());
}
