//! A TCP relay between the proxy and a database that can cut the connection at a chosen moment:
//! right after the server has answered a given command and before that answer is delivered.
//! The server really ran (and committed) the command; only its answer is lost, which is the
//! case a dual-write must treat as *in doubt*.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A relay on a free loopback port in front of `127.0.0.1:upstream`.
pub struct CutRelay {
    pub port: u16,
    armed: Arc<Mutex<Option<String>>>,
    cuts: Arc<Mutex<u32>>,
    task: tokio::task::JoinHandle<()>,
}

impl CutRelay {
    /// Start relaying to `127.0.0.1:upstream` (the server must not use TLS: the relay reads
    /// its messages).
    /// Call from within a tokio runtime.
    pub fn start(upstream: u16) -> CutRelay {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binding the relay");
        listener
            .set_nonblocking(true)
            .expect("a non-blocking relay socket");
        let listener = TcpListener::from_std(listener).expect("relay listener in the runtime");
        let port = listener.local_addr().expect("relay address").port();
        let armed: Arc<Mutex<Option<String>>> = Arc::default();
        let cuts: Arc<Mutex<u32>> = Arc::default();
        let (a, c) = (armed.clone(), cuts.clone());
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (a, c) = (a.clone(), c.clone());
                tokio::spawn(async move {
                    if let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)).await {
                        relay(client, server, a, c).await;
                    }
                });
            }
        });
        CutRelay {
            port,
            armed,
            cuts,
            task,
        }
    }

    /// URL of database `db` through the relay, as the superuser of the harness's clusters.
    pub fn url(&self, cluster: &crate::Cluster, db: &str) -> String {
        cluster.url(db).replace(
            &format!("127.0.0.1:{}/", cluster.port),
            &format!("127.0.0.1:{}/", self.port),
        )
    }

    /// Cut the next connection whose server sends a CommandComplete starting with `tag`
    /// (e.g. "INSERT", "COMMIT"), withholding that message.
    pub fn arm(&self, tag: &str) {
        *self.armed.lock().expect("relay lock") = Some(tag.to_string());
    }

    /// Connections cut so far.
    pub fn cuts(&self) -> u32 {
        *self.cuts.lock().expect("relay lock")
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    armed: Arc<Mutex<Option<String>>>,
    cuts: Arc<Mutex<u32>>,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let upstream = tokio::spawn(async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    // Server to client, message by message.
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    'outer: loop {
        let n = match sr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut pos = 0;
        while pending.len() >= pos + 5 {
            let len = u32::from_be_bytes([
                pending[pos + 1],
                pending[pos + 2],
                pending[pos + 3],
                pending[pos + 4],
            ]) as usize;
            if pending.len() < pos + 1 + len {
                break;
            }
            let msg = &pending[pos..pos + 1 + len];
            if msg[0] == b'C' && take_armed(&armed, &msg[5..]) {
                *cuts.lock().expect("relay lock") += 1;
                // Deliver what came before the answer, then cut.
                let _ = cw.write_all(&pending[..pos]).await;
                break 'outer;
            }
            pos += 1 + len;
        }
        if pos > 0 {
            if cw.write_all(&pending[..pos]).await.is_err() {
                break;
            }
            pending.drain(..pos);
        }
    }
    upstream.abort();
    let _ = cw.shutdown().await;
}

/// Whether a CommandComplete with this tag is the armed one (disarming it).
fn take_armed(armed: &Mutex<Option<String>>, tag: &[u8]) -> bool {
    let mut guard = armed.lock().expect("relay lock");
    let hit = guard
        .as_deref()
        .is_some_and(|want| tag.starts_with(want.as_bytes()));
    if hit {
        *guard = None;
    }
    hit
}

/// A network partition of one loopback port: every packet to or from it is dropped (no reset,
/// no refusal), as when a host dies or a firewall starts dropping its traffic. Connections stay
/// open and silent; a peer learns of the loss only from its own timeouts. Uses `iptables`
/// (the process must be root); the rules are removed on drop.
pub struct Partition {
    port: u16,
    active: bool,
}

impl Partition {
    /// A partition of `127.0.0.1:port`, not yet in force.
    pub fn of(port: u16) -> Partition {
        Partition {
            port,
            active: false,
        }
    }

    fn rules(&self) -> [Vec<String>; 2] {
        let port = self.port.to_string();
        let rule = |dir: &str| -> Vec<String> {
            ["-p", "tcp", "-d", "127.0.0.1", dir, &port, "-j", "DROP"]
                .iter()
                .map(|s| s.to_string())
                .collect()
        };
        [rule("--dport"), rule("--sport")]
    }

    fn iptables(op: &str, rule: &[String]) -> std::process::Output {
        std::process::Command::new("iptables")
            .args(["-w", "5", op, "OUTPUT"])
            .args(rule)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run iptables (scripts/setup.sh installs it; tests run as root): {e}")
            })
    }

    /// Start dropping the port's packets. Panics if iptables refuses.
    pub fn cut(&mut self) {
        for rule in self.rules() {
            let out = Self::iptables("-A", &rule);
            assert!(
                out.status.success(),
                "iptables could not add {rule:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.active = true;
    }

    /// Let the port's packets through again.
    pub fn heal(&mut self) {
        if self.active {
            for rule in self.rules() {
                Self::iptables("-D", &rule);
            }
            self.active = false;
        }
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.heal();
    }
}

/// A small tmpfs of its own, to run out of disk space on demand: [`TinyDisk::fill`] takes all
/// its free space, [`TinyDisk::free`] gives it back. Needs root (mount); unmounted on drop.
pub struct TinyDisk {
    dir: tempfile::TempDir,
    filler: std::path::PathBuf,
}

impl TinyDisk {
    /// A tmpfs of `bytes` mounted on a fresh temp directory.
    pub fn mount(bytes: u64) -> TinyDisk {
        let dir = tempfile::Builder::new()
            .prefix("dwdisk-")
            .tempdir()
            .expect("temp dir for a tmpfs");
        let out = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={bytes},mode=0700"),
                "tmpfs",
            ])
            .arg(dir.path())
            .output()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            out.status.success(),
            "mounting a tmpfs (tests run as root) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let filler = dir.path().join("filler");
        TinyDisk { dir, filler }
    }

    pub fn path(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Take every free byte: from now on writes fail with ENOSPC.
    pub fn fill(&self) {
        use std::io::Write;
        let mut f = std::fs::File::create(&self.filler).expect("creating the filler file");
        let chunk = vec![0u8; 4096];
        loop {
            match f.write(&chunk) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break,
                Err(e) => panic!("filling the tmpfs: {e}"),
            }
        }
        // Partial blocks: fill the last bytes one at a time.
        while let Ok(1) = f.write(&[0u8]) {}
    }

    /// Give the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(&self.filler);
    }
}

impl Drop for TinyDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}
