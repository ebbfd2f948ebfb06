//! Bad configuration is refused with the key and the problem named.

use std::path::Path;

use harborlist::config::load_from;

fn load_with(extra: &str) -> Result<harborlist::config::Settings, String> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("local.toml");
    std::fs::write(&file, extra).unwrap();
    load_from(Path::new("config"), Some(file)).map_err(|e| e.to_string())
}

#[test]
fn defaults_load() {
    let s = load_with("").expect("defaults are valid");
    assert_eq!(s.database.url, "sqlite://data/harborlist.db");
    assert_eq!(s.subscriptions.confirm_ttl.std().as_secs(), 72 * 3600);
    assert_eq!(s.reminders.len(), 2);
}

#[test]
fn bad_values_name_their_key() {
    for (toml, key, problem) in [
        (
            "[subscriptions]\nconfirm_ttl = \"soon\"",
            "subscriptions.confirm_ttl",
            "not a duration",
        ),
        ("[server]\nbind = \"localhost\"", "server.bind", "invalid"),
        (
            "[server]\npublic_url = \"not a url\"",
            "server.public_url",
            "relative URL",
        ),
        ("[mail]\nfrom = \"nobody\"", "mail.from", ""),
        ("[mail]\ntransport = \"pigeon\"", "mail.transport", "pigeon"),
        ("[mail]\ntransport = \"smtp\"", "mail.smtp_url", "required"),
        (
            "[mail]\ntransport = \"smtp\"\nsmtp_url = \"ftp://x\"",
            "mail.smtp_url",
            "",
        ),
        ("[mail]\npool_size = 0", "mail.pool_size", "at least 1"),
        ("[mail]\nsmtp_ulr = \"smtp://x\"", "mail", "smtp_ulr"),
        (
            "[database]\nurl = \"mysql://x\"",
            "database.url",
            "not supported",
        ),
        ("[list]\nid = \"no dots\"", "list.id", "dotted"),
        (
            "[trainings]\ntimezone = \"America/Chicgo\"",
            "trainings.timezone",
            "Chicgo",
        ),
        (
            "[[reminders]]\nname = \"x\"\nbefore = \"2\"\ntemplate = \"reminder\"",
            "reminders",
            "not a duration",
        ),
    ] {
        let err = load_with(toml).expect_err(toml);
        assert!(
            err.contains(key),
            "{toml:?}: error {err:?} does not name {key}"
        );
        assert!(
            err.contains(problem),
            "{toml:?}: error {err:?} does not say {problem:?}"
        );
    }
}

#[test]
fn a_missing_config_file_is_an_error() {
    let err = load_from(
        Path::new("config"),
        Some("/nonexistent/harborlist.toml".into()),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/harborlist.toml"), "{err}");
}
