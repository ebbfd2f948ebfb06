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
        ("[mail]\nfrom = \"nobody\"", "mail.from", "Invalid input"),
        ("[mail]\ntransport = \"pigeon\"", "mail.transport", "pigeon"),
        ("[mail]\ntransport = \"smtp\"", "mail.smtp_url", "required"),
        (
            "[mail]\ntransport = \"smtp\"\nsmtp_url = \"ftp://x\"",
            "mail.smtp_url",
            "Unknown scheme 'ftp'",
        ),
        ("[mail]\npool_size = 0", "mail.pool_size", "use 1 to 100"),
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

/// Every ranged value, out of range: (TOML, key, the error's words). The same table drives
/// the `check` and `serve` tests in `tests/api/limits.rs`.
pub const OUT_OF_RANGE: &[(&str, &str, &str)] = &[
    (
        "[subscriptions]\nconfirm_ttl = \"100000000d\"",
        "subscriptions.confirm_ttl",
        "\"100000000d\" is out of range; use 1m to 30d",
    ),
    (
        "[subscriptions]\nmax_confirmations_per_day = 0",
        "subscriptions.max_confirmations_per_day",
        "0 is out of range; use 1 to 1000",
    ),
    (
        "[subscriptions]\nmax_requests_per_ip_per_hour = 0",
        "subscriptions.max_requests_per_ip_per_hour",
        "use 1 to 1000000",
    ),
    (
        "[schedule]\nhorizon = \"100000000d\"",
        "schedule.horizon",
        "use 0s to 1100d",
    ),
    (
        "[schedule]\ntick = \"0s\"",
        "schedule.tick",
        "\"0s\" is out of range; use 1s to 1h",
    ),
    (
        "[schedule]\npoll = \"1ms\"",
        "schedule.poll",
        "use 50ms to 10m",
    ),
    (
        "[schedule]\nwatch = \"10ms\"",
        "schedule.watch",
        "use 0s (never) or 100ms to 1h",
    ),
    (
        "[[reminders]]\nname = \"x\"\nbefore = \"100000000d\"\ntemplate = \"reminder\"",
        "reminders[0].before",
        "use 1m to 365d",
    ),
    (
        "[mail]\npool_size = 4294967295",
        "mail.pool_size",
        "4294967295 is out of range; use 1 to 100",
    ),
    (
        "[mail]\nmax_per_second = 0.001",
        "mail.max_per_second",
        "use 0 (no limit) or 0.01 to 100000",
    ),
    (
        "[mail]\nmax_per_second = -1",
        "mail.max_per_second",
        "use 0 (no limit) or 0.01 to 100000",
    ),
    ("[mail]\nlease = \"0s\"", "mail.lease", "use 1s to 1d"),
    (
        "[mail]\nretry_base = \"0s\"",
        "mail.retry_base",
        "use 100ms to 1d",
    ),
    (
        "[mail]\nretry_max = \"100000000d\"",
        "mail.retry_max",
        "use 100ms to 7d",
    ),
    (
        "[mail]\nretry_base = \"2h\"\nretry_max = \"1h\"",
        "mail.retry_base",
        "longer than mail.retry_max",
    ),
    (
        "[mail]\nmax_attempts = 0",
        "mail.max_attempts",
        "use 1 to 100",
    ),
    (
        "[mail]\nsmtp_timeout = \"0s\"",
        "mail.smtp_timeout",
        "use 1s to 10m",
    ),
    (
        "[database]\nmax_connections = 0",
        "database.max_connections",
        "use 1 to 100",
    ),
    (
        "[announcements]\nmax_late = \"0s\"",
        "announcements.max_late",
        "use 1m to 30d",
    ),
    (
        "[list]\nname = \"Safe Harbor\\r\\nBcc: everyone@example.org\"",
        "list.name",
        "must be one line",
    ),
];

#[test]
fn out_of_range_values_name_their_key_and_range() {
    for (toml, key, problem) in OUT_OF_RANGE {
        let err = load_with(toml).expect_err(toml);
        assert!(
            err.contains(&format!("{key}: ")) && err.contains(problem),
            "{toml:?}: error {err:?} does not name {key} and say {problem:?}"
        );
    }
}

#[test]
fn announcements_max_late_is_read_beside_the_entries() {
    let s = load_with("[announcements]\nmax_late = \"3h\"").expect("valid");
    assert_eq!(s.announcement_rules.max_late.std().as_secs(), 3 * 3600);
    let s = load_with("").expect("valid");
    assert_eq!(
        s.announcement_rules.max_late.std().as_secs(),
        3600,
        "1h by default"
    );
    let err = load_with("[announcements]\nmax_lat = \"3h\"").unwrap_err();
    assert!(
        err.contains("announcements.max_lat") && err.contains("unknown key"),
        "{err}"
    );
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

/// An entry with a problem is named by its id, its place counted from 1 and the file it is
/// in: for a value that does not parse, a field that does not exist, and a value refused
/// by validation.
#[test]
fn announcement_errors_name_the_entry_by_id_place_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config");
    std::fs::create_dir(&config).unwrap();
    std::fs::copy("config/default.toml", config.join("default.toml")).unwrap();
    let entries = |second: &str| {
        format!(
            "[[announcements]]\nid = \"first\"\nsend_at = \"2027-05-01T09:00\"\nsubject = \"A\"\nmarkdown = \"Hi\"\n\n\
             [[announcements]]\nid = \"may-2027-topics\"\nsubject = \"B\"\nmarkdown = \"Hi\"\n{second}\n"
        )
    };
    let file = config.join("announcements.toml");
    let named = format!(
        "announcement \"may-2027-topics\" (the 2nd [[announcements]] entry, in {}): ",
        file.display()
    );
    for (second, problem) in [
        ("send_at = \"soon\"", "send_at: \"soon\" is not a date-time"),
        (
            "send_at = \"2027-05-01T09:00\"\nsendat = 1",
            "unknown field `sendat`",
        ),
        (
            "send_at = \"2027-03-14T02:30\"",
            "send_at: 2027-03-14 02:30:00 does not exist in America/Chicago",
        ),
    ] {
        std::fs::write(&file, entries(second)).unwrap();
        let err = load_from(&config, None).unwrap_err().to_string();
        assert!(
            err.starts_with(&named) && err.contains(problem),
            "{second:?}: {err}"
        );
        assert!(!err.contains("announcements[1]"), "{err}");
    }

    // Entries in a --config file replace those of announcements.toml: that file is named.
    std::fs::write(&file, entries("send_at = \"2027-05-01T09:00\"")).unwrap();
    let local = dir.path().join("local.toml");
    std::fs::write(
        &local,
        "[[announcements]]\nid = \"june\"\nsend_at = \"2027-06-01T09:00\"\nsubject = \"\"\nmarkdown = \"Hi\"\n",
    )
    .unwrap();
    let err = load_from(&config, Some(local.clone()))
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        format!(
            "announcement \"june\" (the 1st [[announcements]] entry, in {}): subject: is empty",
            local.display()
        )
    );
}

/// `check`, the command staff run after an edit, says it in those words.
#[test]
fn check_names_a_broken_announcement_by_id_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("local.toml");
    std::fs::write(
        &local,
        "[[announcements]]\nid = \"may-2027-topics\"\nsend_at = \"May 1\"\nsubject = \"May\"\nmarkdown = \"Hi\"\n",
    )
    .unwrap();
    let out = crate::cli::harborlist()
        .arg("--config")
        .arg(&local)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "announcement \"may-2027-topics\" (the 1st [[announcements]] entry, in {}): send_at: \"May 1\" is not a date-time",
            local.display()
        )),
        "{stderr}"
    );
}
