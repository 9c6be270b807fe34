//! The client drivers the tests run through the proxy (installed by `scripts/setup.sh` under
//! `/opt/dualwrite-clients`, or `DW_CLIENTS_DIR`) and their applications in `tests/clients/`.
//! A missing driver fails the test with that hint.

use std::path::PathBuf;

/// Where the drivers are installed.
pub fn dir() -> PathBuf {
    std::env::var_os("DW_CLIENTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/dualwrite-clients"))
}

/// An application under `tests/clients/`.
pub fn app(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("clients")
        .join(name)
}

/// `path`, asserting that it exists (`what` names the driver it belongs to).
pub fn require(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): run scripts/setup.sh",
        path.display()
    );
    path
}

/// `python3 APP` with the drivers' directory on its path (checking that each of `packages`,
/// `(directory, name)`, is there).
pub fn python(packages: &[(&str, &str)], script: &str) -> tokio::process::Command {
    let lib = dir().join("python");
    for (package, what) in packages {
        require(lib.join(package), what);
    }
    let mut c = tokio::process::Command::new("python3");
    c.arg(app(script)).env("PYTHONPATH", lib);
    c
}
