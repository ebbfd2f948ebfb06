//! `harborlist bounces check`, through the real binary: what it makes of every fixture, a
//! genuine and a forged VERP tag, that it neither reads nor creates a database (on either
//! backend), and that an unreadable file is named while the others are still checked.

use std::path::Path;

use harborlist::domain::TokenKey;
use serde_json::Value;
use sqlx::{AnyConnection, Connection};

use crate::{
    both_backends,
    helpers::{Backend, DEFAULT_PG, Dsn},
};

both_backends!(works_without_a_database_and_creates_none);

const FIXTURES: &str = "tests/fixtures/bounces";

/// A fixture and what `--json` must say of it: (file, kind, recipients, status, matched).
type Row = (
    &'static str,
    &'static str,
    &'static [&'static str],
    Option<&'static str>,
    bool,
);

/// Every fixture. Their VERP tags were not made with the test's key, so they match by our
/// Message-ID or not at all.
const TABLE: &[Row] = &[
    (
        "postfix-dsn.eml",
        "hard",
        &["pat@example.net"],
        Some("5.1.1"),
        true,
    ),
    (
        "postfix-delayed.eml",
        "delayed",
        &["sam@example.com"],
        Some("4.4.1"),
        true,
    ),
    (
        "exim.eml",
        "hard",
        &["lee@example.com"],
        Some("5.1.1"),
        true,
    ),
    (
        "exim-delayed.eml",
        "delayed",
        &["jamie@example.org"],
        Some("4.7.1"),
        true,
    ),
    (
        "qmail.eml",
        "hard",
        &["robin@example.net"],
        Some("5.1.1"),
        true,
    ),
    (
        "sendmail-dsn.eml",
        "hard",
        &["alex@example.edu"],
        Some("5.1.1"),
        true,
    ),
    (
        "exchange-ndr.eml",
        "hard",
        &["jordan@contoso.example"],
        Some("5.1.10"),
        true,
    ),
    (
        "office365-policy-5.7.515.eml",
        "hard",
        &["casey@fabrikam.example"],
        Some("5.7.515"),
        true,
    ),
    (
        "gmail.eml",
        "hard",
        &["taylor@gmail.com"],
        Some("5.1.1"),
        true,
    ),
    ("yahoo.eml", "hard", &["kim@yahoo.com"], None, true),
    (
        "arf-complaint.eml",
        "complaint",
        &["morgan@yahoo.com"],
        None,
        true,
    ),
    (
        "arf-complaint-headers.eml",
        "complaint",
        &["quinn@isp.example"],
        None,
        true,
    ),
    ("auto-reply-ooo.eml", "auto-reply", &[], None, true),
    ("exchange-oof.eml", "auto-reply", &[], None, true),
    ("vacation.eml", "auto-reply", &[], None, false),
    ("abwesenheitsnotiz.eml", "auto-reply", &[], None, false),
    ("not-a-report.eml", "not-a-report", &[], None, false),
];

#[test]
fn json_gives_each_fixtures_kind_recipients_status_and_match() {
    let env = Env::new();
    let files: Vec<String> = TABLE
        .iter()
        .map(|r| format!("{FIXTURES}/{}", r.0))
        .collect();
    let mut args = vec!["--json"];
    args.extend(files.iter().map(String::as_str));
    let out = env.check(&args).ok();
    let docs = out.json();
    assert_eq!(docs.len(), TABLE.len(), "{}", out.stdout);
    for ((file, kind, recipients, status, matched), (doc, path)) in
        TABLE.iter().zip(docs.iter().zip(&files))
    {
        assert_eq!(doc["file"], path.as_str(), "{file}");
        assert_eq!(doc["kind"], *kind, "{file}: {doc}");
        let got: Vec<&str> = doc["recipients"]
            .as_array()
            .expect("recipients is an array")
            .iter()
            .map(|a| a.as_str().expect("an address"))
            .collect();
        assert_eq!(got, *recipients, "{file}");
        assert_eq!(doc["status"].as_str(), *status, "{file}: {doc}");
        assert!(status.is_some() || doc["status"].is_null(), "{file}: {doc}");
        assert_eq!(doc["matched"], *matched, "{file}: {doc}");
        let by = if *matched { Some("message-id") } else { None };
        assert_eq!(doc["matched_by"].as_str(), by, "{file}: {doc}");
    }
    // The key was configured, so no note about it.
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn human_output_says_kind_status_match_and_recipient_per_file() {
    let env = Env::new();
    let postfix = format!("{FIXTURES}/postfix-dsn.eml");
    let vacation = format!("{FIXTURES}/vacation.eml");
    let plain = format!("{FIXTURES}/not-a-report.eml");
    let out = env.check(&[&postfix, &vacation, &plain]).ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines[..2],
        [
            format!(
                "{postfix}: hard bounce, 5.1.1, matches a message harborlist sent (Message-ID, subscriber 42)"
            ),
            "  to: pat@example.net".to_owned(),
        ],
        "{}",
        out.stdout
    );
    assert!(lines[2].starts_with("  said: 550 5.1.1"), "{}", out.stdout);
    // The fixture's tag is made up: it matched by Message-ID, and the tag is called out.
    assert!(
        lines[3].starts_with("  VERP tag: does not verify under the token key"),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[4..],
        [
            format!("{vacation}: auto-reply (ignored), does not match anything harborlist sent"),
            format!("{plain}: not a report, does not match anything harborlist sent"),
        ],
        "{}",
        out.stdout
    );
}

#[test]
fn a_verp_tag_of_the_configured_key_matches_and_a_forged_one_does_not() {
    let previous = TokenKey::generate_text();
    let env = Env::new().previous_key(&previous);
    let rp = return_path();
    let current = TokenKey::parse(&env.key).expect("key");
    let old = TokenKey::parse(&previous).expect("key");
    let stranger = TokenKey::parse(&TokenKey::generate_text()).expect("key");
    // Message-IDs that are not ours, so only the tag can match.
    let not_ours = "abc.1@elsewhere.example";
    let genuine = current.verp_address(&rp, 4711).to_string();
    let rotated = old.verp_address(&rp, 4712).to_string();
    let forged = stranger.verp_address(&rp, 4713).to_string();
    let files = env.write(&[
        (
            "genuine.eml",
            Dsn::hard(&genuine, "ana@example.net", not_ours).bytes(),
        ),
        (
            "rotated.eml",
            Dsn::hard(&rotated, "bo@example.net", not_ours).bytes(),
        ),
        (
            "forged.eml",
            Dsn::hard(&forged, "cy@example.net", not_ours).bytes(),
        ),
    ]);
    let args: Vec<&str> = std::iter::once("--json")
        .chain(files.iter().map(String::as_str))
        .collect();
    let docs = env.check(&args).ok().json();
    let summary: Vec<(&str, bool, Option<&str>)> = docs
        .iter()
        .map(|d| {
            (
                d["recipients"][0].as_str().expect("a recipient"),
                d["matched"].as_bool().expect("matched is a bool"),
                d["matched_by"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ana@example.net", true, Some("verp")),
            ("bo@example.net", true, Some("verp")),
            ("cy@example.net", false, None),
        ]
    );

    let out = env.check(&[&files[0], &files[2]]).ok();
    assert!(
        out.stdout.contains(&format!(
            "{}: hard bounce, 5.1.1, matches a message harborlist sent (VERP tag of delivery 4711)",
            files[0]
        )),
        "{}",
        out.stdout
    );
    let forged_block = out
        .stdout
        .split(&files[2])
        .nth(1)
        .expect("the forged block");
    assert!(
        forged_block.starts_with(": hard bounce, 5.1.1, does not match anything harborlist sent")
            && forged_block.contains("VERP tag: does not verify under the token key"),
        "{}",
        out.stdout
    );
}

#[test]
fn without_a_token_key_message_ids_still_match_and_a_note_names_the_setting() {
    let env = Env::new();
    let rp = return_path();
    let key = TokenKey::parse(&env.key).expect("key");
    let tagged = key.verp_address(&rp, 4711).to_string();
    let files = env.write(&[(
        "tagged.eml",
        Dsn::hard(&tagged, "ana@example.net", "abc.1@elsewhere.example").bytes(),
    )]);
    let missing = env.dir.path().join("no.key");
    let out = env
        .check_with(
            &["--json", &files[0], &format!("{FIXTURES}/postfix-dsn.eml")],
            &[
                ("HARBORLIST__SECURITY__TOKEN_KEY", None),
                (
                    "HARBORLIST__SECURITY__TOKEN_KEY_FILE",
                    Some(missing.to_str().expect("a UTF-8 path")),
                ),
            ],
        )
        .ok();
    let matched: Vec<bool> = out
        .json()
        .iter()
        .map(|d| d["matched"].as_bool().expect("a bool"))
        .collect();
    assert_eq!(matched, [false, true], "{}", out.stdout);
    let notes: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(notes.len(), 1, "{}", out.stderr);
    assert!(
        notes[0].contains("VERP tags could not be checked")
            && notes[0].contains("security.token_key_file")
            && notes[0].contains(&missing.display().to_string()),
        "{}",
        out.stderr
    );
    assert!(!missing.exists(), "no key file is created");
}

#[test]
fn an_unreadable_file_is_named_the_others_still_print_and_the_exit_is_1() {
    let env = Env::new();
    let missing = env.dir.path().join("gone.eml");
    let missing = missing.to_str().expect("a UTF-8 path");
    let a_dir = env.dir.path().to_str().expect("a UTF-8 path");
    let postfix = format!("{FIXTURES}/postfix-dsn.eml");
    let gmail = format!("{FIXTURES}/gmail.eml");
    for json in [false, true] {
        let mut args = vec![postfix.as_str(), missing, a_dir, gmail.as_str()];
        if json {
            args.insert(0, "--json");
        }
        let out = env.check(&args);
        assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
        let errors: Vec<&str> = out.stderr.lines().collect();
        assert_eq!(errors.len(), 2, "{}", out.stderr);
        assert!(errors[0].contains(missing), "{}", out.stderr);
        assert!(errors[1].contains(a_dir), "{}", out.stderr);
        if json {
            let files: Vec<String> = out
                .json()
                .iter()
                .map(|d| d["file"].as_str().expect("a file").to_owned())
                .collect();
            assert_eq!(files, [postfix.clone(), gmail.clone()]);
        } else {
            for (file, address) in [(&postfix, "pat@example.net"), (&gmail, "taylor@gmail.com")] {
                assert!(
                    out.stdout
                        .contains(&format!("{file}: hard bounce, 5.1.1, matches"))
                        && out.stdout.contains(&format!("  to: {address}\n")),
                    "{}",
                    out.stdout
                );
            }
        }
    }
}

#[test]
fn help_explains_bounces_check_and_lists_an_example() {
    let out = crate::cli::harborlist()
        .arg("--help")
        .output()
        .expect("run harborlist");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("bounces") && text.contains("harborlist bounces check"),
        "{text}"
    );
    let out = crate::cli::harborlist()
        .args(["bounces", "check", "--help"])
        .output()
        .expect("run harborlist");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for words in [
        "before pointing harborlist at a mailbox",
        "--json",
        "no database",
    ] {
        assert!(text.contains(words), "lacks {words}:\n{text}");
    }
}

/// The database URL names a database that does not exist: on SQLite a file in an empty
/// folder, on PostgreSQL a database name on the real server. The command succeeds, and
/// afterwards the folder is still empty and the server still has no such database.
async fn works_without_a_database_and_creates_none(backend: Backend) {
    let env = Env::new();
    let postfix = format!("{FIXTURES}/postfix-dsn.eml");
    let name = format!("harborlist_absent_{}", harborlist::domain::new_nonce());
    let admin =
        std::env::var("HARBORLIST_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG.to_owned());
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}/harborlist.db", env.dir.path().display()),
        Backend::Postgres => {
            let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
            format!("{base}/{name}")
        }
    };
    let out = env
        .check_with(
            &["--json", &postfix],
            &[("HARBORLIST__DATABASE__URL", Some(&url))],
        )
        .ok();
    assert_eq!(out.json()[0]["kind"], "hard", "{}", out.stdout);
    match backend {
        Backend::Sqlite => {
            let left: Vec<_> = std::fs::read_dir(env.dir.path())
                .expect("the temp dir")
                .collect();
            assert!(left.is_empty(), "created {left:?}");
        }
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            let mut conn = AnyConnection::connect(&admin)
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL unreachable at {admin}: {e}"));
            let found: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM pg_database WHERE datname = $1")
                    .bind(&name)
                    .fetch_one(&mut conn)
                    .await
                    .expect("count databases");
            let _ = conn.close().await;
            assert_eq!(found, 0, "a database {name} was created");
        }
    }
}

/// `mail.return_path` of the defaults the binary runs with.
fn return_path() -> lettre::Address {
    harborlist::config::load_from(Path::new("config"), None)
        .expect("the defaults")
        .mail
        .return_path()
}

/// The binary from the crate root, with none of the developer's HARBORLIST* settings, a
/// token key of its own, and a database URL in an empty temp folder that is never made.
struct Env {
    dir: tempfile::TempDir,
    key: String,
    /// A folder with `extra.toml`, given with HARBORLIST_CONFIG.
    config: Option<tempfile::TempDir>,
}

/// What one run printed.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Env {
    fn new() -> Self {
        Self {
            dir: tempfile::tempdir().expect("temp dir"),
            key: TokenKey::generate_text(),
            config: None,
        }
    }

    /// Lists `key` in `security.previous_token_keys`, in a config file of a folder of its
    /// own (the no-database test expects `dir` to stay empty).
    fn previous_key(mut self, key: &str) -> Self {
        let dir = tempfile::tempdir().expect("config dir");
        let text = format!("[security]\nprevious_token_keys = [{{ key = \"{key}\" }}]\n");
        std::fs::write(dir.path().join("extra.toml"), text).expect("write config");
        self.config = Some(dir);
        self
    }

    /// Writes messages into a folder of their own; returns their paths.
    fn write(&self, files: &[(&str, Vec<u8>)]) -> Vec<String> {
        let dir = self.dir.path().join("messages");
        std::fs::create_dir_all(&dir).expect("messages dir");
        files
            .iter()
            .map(|(name, bytes)| {
                let path = dir.join(name);
                std::fs::write(&path, bytes).expect("write message");
                path.to_str().expect("a UTF-8 path").to_owned()
            })
            .collect()
    }

    fn check(&self, args: &[&str]) -> Run {
        self.check_with(args, &[])
    }

    /// `bounces check ARGS` with `env` on top (None removes a variable).
    fn check_with(&self, args: &[&str], env: &[(&str, Option<&str>)]) -> Run {
        let mut cmd = crate::cli::harborlist();
        cmd.args(["bounces", "check"])
            .args(args)
            .env(
                "HARBORLIST__DATABASE__URL",
                format!("sqlite://{}/none/harborlist.db", self.dir.path().display()),
            )
            .env("HARBORLIST__SECURITY__TOKEN_KEY", &self.key);
        if let Some(config) = &self.config {
            cmd.env("HARBORLIST_CONFIG", config.path().join("extra.toml"));
        }
        for (k, v) in env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        let out = cmd.output().expect("run harborlist");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    #[track_caller]
    fn ok(self) -> Self {
        assert_eq!(
            self.code,
            Some(0),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    /// Standard output as the JSON array it must be.
    #[track_caller]
    fn json(&self) -> Vec<Value> {
        match serde_json::from_str(&self.stdout) {
            Ok(Value::Array(docs)) => docs,
            other => panic!("not a JSON array ({other:?}):\n{}", self.stdout),
        }
    }
}
