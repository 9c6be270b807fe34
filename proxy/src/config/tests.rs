use super::*;

const BASE: &str = r#"
listen = "127.0.0.1:0"
admin_listen = ""
[source]
url = "postgres://postgres:secret@127.0.0.1:5432/app?sslmode=disable"
[auth]
method = "scram-sha-256"
users = [{ name = "app", password = "app-secret" }, { name = "report", password = "r1", target_password = "r2" }]
"#;

#[test]
fn loads_the_documented_shape() {
    let s = Settings::from_toml(BASE).unwrap();
    assert_eq!(s.mode, Mode::PrimaryOnly);
    assert_eq!(s.primary, Side::Source);
    let report = &s.users["report"];
    assert_eq!(
        report.backend_password(Side::Source).unwrap().expose(),
        "r1"
    );
    assert_eq!(
        report.backend_password(Side::Target).unwrap().expose(),
        "r2"
    );
    assert!(!format!("{s:?}").contains("secret"));
}

#[test]
fn names_the_bad_key() {
    let err = Settings::from_toml(&format!("{BASE}\nlisen = \"x\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("lisen"), "{err}");
    let err = Settings::from_toml(&BASE.replace("127.0.0.1:0", "nonsense"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("`listen`"), "{err}");
    let err = Settings::from_toml(&BASE.replace("sslmode=disable", "sslmode=sometimes"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("source.url") && !err.contains("secret"),
        "{err}"
    );
    let err = Settings::from_toml(&BASE.replace("scram-sha-256", "rot13"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("rot13"), "{err}");
    let err = Settings::from_toml(&format!("{BASE}\nprimary = \"target\""))
        .unwrap_err()
        .to_string();
    assert!(err.contains("primary"), "{err}");
}

#[test]
fn shadow_batch_wait_is_a_short_duration() {
    let with = |v: &str| {
        BASE.replace(
            "admin_listen = \"\"",
            &format!("admin_listen = \"\"\nshadow_batch_wait = \"{v}\""),
        )
    };
    assert_eq!(
        Settings::from_toml(BASE).unwrap().shadow_batch_wait,
        Duration::from_millis(3)
    );
    assert_eq!(
        Settings::from_toml(&with("0s")).unwrap().shadow_batch_wait,
        Duration::ZERO
    );
    for bad in ["2s", "soon"] {
        let err = Settings::from_toml(&with(bad)).unwrap_err().to_string();
        assert!(err.contains("shadow_batch_wait"), "{err}");
    }
}
