//! docker-compose.yml is valid (checked with Debian's `docker-compose config`; running it needs
//! a Docker engine, which CI machines do not have).

#[test]
fn compose_file_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = std::process::Command::new("docker-compose")
        .arg("config")
        .current_dir(&root)
        .output()
        .expect("docker-compose is installed by scripts/setup.sh");
    assert!(
        out.status.success(),
        "docker-compose config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for service in ["source:", "target:", "proxy:"] {
        assert!(text.contains(service), "{service} missing:\n{text}");
    }
    // The proxy config it mounts is a valid proxy config (secrets from the environment).
    for (k, v) in [
        ("SOURCE_PASSWORD", "s"),
        ("TARGET_PASSWORD", "t"),
        ("APP_PASSWORD", "a"),
    ] {
        std::env::set_var(k, v);
    }
    dualwrite_proxy::Settings::load(&root.join("deploy/proxy.toml"))
        .expect("deploy/proxy.toml loads");
}
