//! Throwaway TLS material made with the `openssl` command: a CA and a server certificate.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and one server certificate signed by it, in a temp dir readable by the `postgres` user.
pub struct TestCerts {
    dir: tempfile::TempDir,
}

impl TestCerts {
    /// Server certificate valid for `names` (DNS names or IP addresses).
    pub fn new(names: &[&str]) -> TestCerts {
        let dir = tempfile::Builder::new()
            .prefix("dwcerts-")
            .tempdir_in("/tmp")
            .unwrap();
        let d = dir.path();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(d)
                .output()
                .expect("run openssl (apt-get install openssl)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=dualwrite test CA",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            &format!("/CN={}", names[0]),
        ]);
        let san: Vec<String> = names
            .iter()
            .map(|n| {
                if n.parse::<std::net::IpAddr>().is_ok() {
                    format!("IP:{n}")
                } else {
                    format!("DNS:{n}")
                }
            })
            .collect();
        std::fs::write(
            d.join("ext.cnf"),
            format!("subjectAltName={}\n", san.join(",")),
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        crate::cluster::hand_to_postgres(d, &["server.key", "server.crt", "ca.crt"]);
        TestCerts { dir }
    }

    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }
    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("server.crt")
    }
    pub fn key(&self) -> PathBuf {
        self.dir.path().join("server.key")
    }
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The proxy's `[tls]` section requiring TLS from clients with this certificate.
    pub fn proxy_tls_section(&self) -> String {
        format!(
            "[tls]\nmode = \"require\"\ncert = \"{}\"\nkey = \"{}\"\n",
            self.cert().display(),
            self.key().display()
        )
    }

    /// `postgresql.conf` lines that turn on TLS with this certificate.
    pub fn server_conf(&self) -> Vec<String> {
        vec![
            "ssl = on".to_string(),
            format!("ssl_cert_file = '{}'", self.cert().display()),
            format!("ssl_key_file = '{}'", self.key().display()),
        ]
    }
}
