//! Untrusted text never reaches a staff member's terminal raw (issue 16, item 10): a CSV
//! whose header holds `ESC[2J`, a row whose name retitles the window, and stored names and
//! addresses with escape sequences, through the real binary; its stdout and stderr bytes
//! are checked for ESC and BEL.

use std::process::{Command, Output};

use harborlist::{domain::TokenKey, store::Store};

use crate::{
    both_backends,
    helpers::{Backend, TestDb, seed},
};

both_backends!(
    import_errors_escape_a_crafted_header_and_rows,
    subscribers_list_escapes_stored_names_and_addresses,
);

const CLEAR_SCREEN: &str = "\x1b[2J";
const RETITLE: &str = "\x1b]0;title\x07";

fn harborlist(db_url: &str, key: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_harborlist"));
    cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
    for (k, _) in std::env::vars() {
        if k.starts_with("HARBORLIST") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .env("HARBORLIST__DATABASE__URL", db_url)
        .env("HARBORLIST__SECURITY__TOKEN_KEY", key)
        .output()
        .expect("run harborlist")
}

/// Neither stream holds a byte a terminal would act on (ESC, BEL, CSI); returns stderr.
#[track_caller]
fn assert_terminal_safe(out: &Output) -> String {
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        let text = String::from_utf8_lossy(bytes);
        assert!(
            !bytes.iter().any(|&b| b == 0x1b || b == 0x07) && !text.contains('\u{9b}'),
            "{stream} has raw control bytes: {text:?}"
        );
    }
    String::from_utf8_lossy(&out.stderr).into_owned()
}

async fn import_errors_escape_a_crafted_header_and_rows(backend: Backend) {
    let db = TestDb::new(backend).await;
    let key = TokenKey::generate_text();
    let dir = tempfile::tempdir().expect("temp dir");

    // No email column: the error lists the header it found.
    let header = dir.path().join("header.csv");
    std::fs::write(&header, format!("name{CLEAR_SCREEN},x\nann@x.test,Ann\n")).expect("write");
    let out = harborlist(&db.url, &key, &["subscribers", "import", path(&header)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = assert_terminal_safe(&out);
    assert!(
        stderr.contains("found: name\\u{1b}[2J, x — "),
        "the header is shown, escaped: {stderr}"
    );

    // Rows with escape sequences in their cells are refused, by line, without echoing them.
    let rows = dir.path().join("rows.csv");
    std::fs::write(
        &rows,
        format!(
            "email,name\nok@x.test,{RETITLE}\nev{CLEAR_SCREEN}il@x.test,Eve\ngood@x.test,Good\n"
        ),
    )
    .expect("write");
    let out = harborlist(&db.url, &key, &["subscribers", "import", path(&rows)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = assert_terminal_safe(&out);
    assert!(stderr.contains("line 2: invalid name"), "{stderr}");
    assert!(stderr.contains("line 3: invalid email address"), "{stderr}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("imported 1,"),
        "{out:?}"
    );
}

async fn subscribers_list_escapes_stored_names_and_addresses(backend: Backend) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    let key = TokenKey::generate_text();
    let token_key = TokenKey::parse(&key).expect("key");
    // Stored as an older version or a hand-edited database might have them.
    seed(&store, &token_key, "jane@x.test", "active").await;
    seed(
        &store,
        &token_key,
        &format!("ev{CLEAR_SCREEN}e@x.test"),
        "pending",
    )
    .await;
    sqlx::query("UPDATE subscribers SET name = $1 WHERE email_key = $2")
        .bind(format!("Jane{RETITLE}\u{202E}Doe"))
        .bind("jane@x.test")
        .execute(store.pool())
        .await
        .expect("set name");
    store.close().await;

    let out = harborlist(&db.url, &key, &["subscribers", "list"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert_terminal_safe(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Jane\\u{1b}]0;title\\u{7}\\u{202e}Doe"),
        "the name is shown, escaped: {stdout}"
    );
    assert!(stdout.contains("ev\\u{1b}[2Je@x.test"), "{stdout}");
    assert!(!stdout.contains('\u{202E}'), "{stdout}");

    // An address typed (or pasted) on the command line is echoed escaped too.
    let out = harborlist(
        &db.url,
        &key,
        &["subscribers", "remove", &format!("x{CLEAR_SCREEN}@y")],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = assert_terminal_safe(&out);
    assert!(stderr.contains("x\\u{1b}[2J@y"), "{stderr}");
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("temp paths are UTF-8")
}
