//! `harborlist subscribers export|import|remove|forget`, through the real binary against a
//! fresh database on each backend; results are read back through the store and with SQL.

use std::{path::Path, process::Command};

use harborlist::{
    domain::TokenKey,
    store::{Store, subscriptions::suppression_hash},
};
use sqlx::Row;

use crate::{
    announcements::announcement,
    both_backends,
    helpers::{Backend, TestDb, seed, spawn_app},
    schedule::World,
};

both_backends!(
    import_keeps_good_rows_reports_bad_lines_and_never_resubscribes,
    import_reads_a_spreadsheet_export_with_bom_and_crlf,
    import_without_an_email_column_fails_and_changes_nothing,
    import_counts_add_up_across_batches,
    import_reads_a_google_groups_export_with_its_statuses,
    import_reads_mailchimp_audience_exports,
    import_reads_mailman_members_output,
    import_reads_an_excel_semicolon_export_with_bom_and_crlf,
    import_takes_column_delimiter_and_format_overrides,
    import_lists_status_words_it_does_not_know,
    imported_people_who_left_or_bounced_get_no_announcement,
    export_writes_every_subscriber_as_csv_and_json,
    remove_unsubscribes_idempotently,
    forget_erases_the_person_and_blocks_reimport,
);

const MIXED: &str = "tests/fixtures/import/mixed.csv";

/// The binary, run from the crate root against one database, with none of the developer's
/// HARBORLIST* settings.
struct Cli {
    db_url: String,
    key: String,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harborlist"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        for (k, _) in std::env::vars() {
            if k.starts_with("HARBORLIST") {
                cmd.env_remove(k);
            }
        }
        let out = cmd
            .arg("subscribers")
            .args(args)
            .env("HARBORLIST__DATABASE__URL", &self.db_url)
            .env("HARBORLIST__SECURITY__TOKEN_KEY", &self.key)
            .output()
            .expect("run harborlist");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

impl Run {
    /// Standard output's lines.
    fn lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }

    /// An import's last line: the counts.
    fn summary(&self) -> &str {
        self.stdout.lines().last().unwrap_or("")
    }

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
}

/// A fresh database, a store on it, and the CLI pointed at it.
async fn setup(backend: Backend) -> (TestDb, Store, Cli) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    let cli = Cli {
        db_url: db.url.clone(),
        key: TokenKey::generate_text(),
    };
    (db, store, cli)
}

/// (status, source, name) of an address, if it is on the list.
async fn row_of(store: &Store, email: &str) -> Option<(String, String, Option<String>)> {
    store
        .list_subscribers()
        .await
        .expect("list")
        .into_iter()
        .find(|s| s.email.eq_ignore_ascii_case(email))
        .map(|s| (s.status.as_str().to_owned(), s.source, s.name))
}

/// `sql` is a `SELECT COUNT(*) … $1` query.
async fn count<T>(store: &Store, sql: &'static str, bind: T) -> i64
where
    T: for<'q> sqlx::Encode<'q, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(store.pool())
        .await
        .expect("count")
        .try_get::<i64, _>(0)
        .expect("count column")
}

async fn import_keeps_good_rows_reports_bad_lines_and_never_resubscribes(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let key = TokenKey::parse(&cli.key).expect("key");
    seed(&store, &key, "left@example.org", "unsubscribed").await;
    seed(&store, &key, "kim@example.org", "active").await;
    let forgot = cli.run(&["forget", "forgotten@example.org"]).ok();
    assert!(forgot.stdout.contains("suppressed"), "{}", forgot.stdout);

    let out = cli.run(&["import", MIXED]).ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by commas",
            "columns used: email \"Email\", name \"Name\"",
            "columns ignored: \"Organisation\"",
            "imported 4, already on the list 2, suppressed 1, bad rows 6",
        ],
        "stderr:\n{}",
        out.stderr
    );
    let bad: Vec<&str> = out.stderr.lines().collect();
    assert_eq!(
        bad,
        [
            "line 4: invalid email address: An email address needs exactly one @, like name@example.org.",
            "line 6: invalid name: A name can't contain line breaks or control characters.",
            "line 7: invalid name: A name can't contain line breaks or control characters.",
            "line 10: invalid name: A name can't contain line breaks or control characters.",
            "line 14: the email cell is empty",
            "line 16: no email cell (the row has 1 of the 3 columns)",
        ],
        "{}",
        out.stderr
    );

    let imported = |name: &str| Some(("active".into(), "import".into(), Some(name.to_owned())));
    assert_eq!(
        row_of(&store, "ana@example.org").await,
        imported("Ana Alvarez")
    );
    assert_eq!(
        row_of(&store, "ben@example.org").await,
        Some(("active".into(), "import".into(), None))
    );
    assert_eq!(row_of(&store, "eve@example.org").await, imported("Eve"));
    assert_eq!(row_of(&store, "hal@example.org").await, imported("Hal"));
    // The address is stored as written (trimmed), the duplicate in capitals is not a second row.
    let all = store.list_subscribers().await.expect("list");
    assert!(all.iter().any(|s| s.email == "eve@example.org"));
    assert_eq!(
        all.iter()
            .filter(|s| s.email.eq_ignore_ascii_case("ana@example.org"))
            .count(),
        1
    );
    // Known addresses are untouched: the unsubscribed one stays unsubscribed.
    assert_eq!(
        row_of(&store, "left@example.org").await.map(|r| r.0),
        Some("unsubscribed".into())
    );
    assert_eq!(
        row_of(&store, "kim@example.org").await.map(|r| r.2),
        Some(None),
        "the existing row keeps its (empty) name"
    );
    for absent in [
        "forgotten@example.org",
        "carol@example.org",
        "dee@example.org",
        "gus@example.org",
    ] {
        assert_eq!(row_of(&store, absent).await, None, "{absent}");
    }
    assert_eq!(all.len(), 6);
    // Imported people get a working unsubscribe link derived with the configured key.
    let row = sqlx::query("SELECT unsub_nonce, unsub_hash FROM subscribers WHERE email_key = $1")
        .bind("ana@example.org")
        .fetch_one(store.pool())
        .await
        .expect("ana");
    let nonce: String = row.get("unsub_nonce");
    let hash: String = row.get("unsub_hash");
    assert_eq!(
        key.derive(harborlist::domain::TokenPurpose::Unsubscribe, &nonce)
            .hash(),
        hash
    );

    // Running the same file again changes nothing.
    let again = cli.run(&["import", MIXED]).ok();
    assert_eq!(
        again.summary(),
        "imported 0, already on the list 6, suppressed 1, bad rows 6"
    );
    assert_eq!(store.list_subscribers().await.expect("list").len(), 6);
}

async fn import_reads_a_spreadsheet_export_with_bom_and_crlf(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let out = cli.run(&["import", "tests/fixtures/import/excel.csv"]).ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by commas",
            "columns used: email \"EMAIL\", name \"Name\"",
            "columns ignored: \"Phone\"",
            "imported 2, already on the list 0, suppressed 0, bad rows 1",
        ]
    );
    assert_eq!(
        out.stderr.trim(),
        "line 4: the name cell is not UTF-8 text (save the file as \"CSV UTF-8\")"
    );
    assert_eq!(
        row_of(&store, "zoe@example.org").await.and_then(|r| r.2),
        Some("Zoë Ñ".into())
    );
    assert_eq!(
        row_of(&store, "yan@example.org").await.and_then(|r| r.2),
        Some("Yan, Jr.".into())
    );
}

async fn import_without_an_email_column_fails_and_changes_nothing(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let out = cli.run(&["import", "tests/fixtures/import/no_email_column.csv"]);
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stderr
            .contains("has no email column; found: name, address — use --email-column 'address'"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.is_empty(), "{}", out.stdout);
    assert!(store.list_subscribers().await.expect("list").is_empty());

    let out = cli.run(&["import", "tests/fixtures/import/does-not-exist.csv"]);
    assert_eq!(out.code, Some(1));
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);

    // A file whose first line is a subscriber, not a header: refused, address not echoed.
    let dir = tempfile::tempdir().expect("dir");
    let headless = dir.path().join("headless.csv");
    std::fs::write(&headless, "jane.doe@example.org,Jane\n").expect("write");
    let out = cli.run(&["import", path(&headless)]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stderr.contains("add a header line") && !out.stderr.contains("jane.doe"),
        "{}",
        out.stderr
    );
    assert!(store.list_subscribers().await.expect("list").is_empty());
}

/// More rows than one transaction (and many more than one statement) holds, with known and
/// suppressed addresses spread over several of each.
async fn import_counts_add_up_across_batches(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, range: std::ops::Range<usize>, step: usize| {
        let file = dir.path().join(name);
        let mut text = String::from("name,email\n");
        for i in range.step_by(step) {
            text.push_str(&format!("Person {i},p{i}@example.org\n"));
        }
        std::fs::write(&file, text).expect("write");
        file
    };
    let every_third = write("some.csv", 0..12_000, 3);
    let out = cli.run(&["import", path(&every_third)]).ok();
    assert_eq!(
        out.summary(),
        "imported 4000, already on the list 0, suppressed 0, bad rows 0"
    );
    if backend == Backend::Postgres {
        // The import leaves PostgreSQL's planner knowing the list is no longer empty, so
        // a fan-out right after it walks the index instead of sorting the whole table.
        let planned: i64 = sqlx::query(
            "SELECT reltuples::bigint AS n FROM pg_class WHERE relname = 'subscribers'",
        )
        .fetch_one(store.pool())
        .await
        .expect("statistics")
        .get("n");
        assert_eq!(planned, 4_000);
    }
    // Two never imported, one imported (every third) and then forgotten.
    for i in [1_001, 1_502, 11_997] {
        cli.run(&["forget", &format!("p{i}@example.org")]).ok();
    }
    let all = write("all.csv", 0..12_000, 1);
    let out = cli.run(&["import", path(&all)]).ok();
    assert_eq!(
        out.summary(),
        "imported 7998, already on the list 3999, suppressed 3, bad rows 0"
    );
    let list = store.list_subscribers().await.expect("list");
    assert_eq!(list.len(), 3_999 + 7_998);
    assert!(list.iter().all(|s| s.source == "import"));
    assert!(
        !list
            .iter()
            .any(|s| s.email == "p1502@example.org" || s.email == "p11997@example.org")
    );
    assert!(
        list.iter()
            .any(|s| s.email == "p11998@example.org" && s.name.as_deref() == Some("Person 11998"))
    );
}

async fn export_writes_every_subscriber_as_csv_and_json(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let key = TokenKey::parse(&cli.key).expect("key");
    seed(&store, &key, "first@example.org", "active").await;
    seed(&store, &key, "second@example.org", "pending").await;
    cli.run(&["remove", "first@example.org"]).ok();
    let dir = tempfile::tempdir().expect("dir");
    let names = dir.path().join("names.csv");
    std::fs::write(&names, "email,name\nthird@example.org,\"Thi, Rd\"\n").expect("write");
    cli.run(&["import", path(&names)]).ok();

    // CSV on stdout: a header, then one row per subscriber, oldest first.
    let out = cli.run(&["export"]).ok();
    assert!(
        out.stderr.contains("exported 3 subscriber(s)"),
        "{}",
        out.stderr
    );
    let mut csv = csv::Reader::from_reader(out.stdout.as_bytes());
    let header: Vec<String> = csv
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "email",
            "name",
            "status",
            "source",
            "created_at",
            "confirmed_at",
            "unsubscribed_at",
            "registrations"
        ]
    );
    let rows: Vec<csv::StringRecord> = csv.records().map(|r| r.expect("row")).collect();
    assert_eq!(rows.len(), 3);
    let rfc3339 = |s: &str| chrono::DateTime::parse_from_rfc3339(s).is_ok() && s.ends_with('Z');
    assert_eq!(&rows[0][0], "first@example.org");
    assert_eq!(&rows[0][2], "unsubscribed");
    assert!(rfc3339(&rows[0][6]), "{:?}", rows[0]);
    assert_eq!(&rows[1][0], "second@example.org");
    assert_eq!(&rows[1][2], "pending");
    assert_eq!(&rows[1][6], "");
    assert_eq!(
        rows[2].iter().take(4).collect::<Vec<_>>(),
        ["third@example.org", "Thi, Rd", "active", "import"]
    );
    assert!(
        rfc3339(&rows[2][4]) && rfc3339(&rows[2][5]),
        "{:?}",
        rows[2]
    );

    // JSON to a file: the same rows, nulls where there is no value.
    let file = dir.path().join("list.json");
    let out = cli
        .run(&["export", "--format", "json", "--output", path(&file)])
        .ok();
    assert!(
        out.stdout.contains("exported 3 subscriber(s)"),
        "{}",
        out.stdout
    );
    let json: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&file).expect("read export")).expect("JSON array");
    assert_eq!(json.len(), 3);
    assert_eq!(json[0]["email"], "first@example.org");
    assert_eq!(json[0]["status"], "unsubscribed");
    assert!(json[0]["unsubscribed_at"].as_str().is_some_and(rfc3339));
    assert_eq!(json[1]["status"], "pending");
    assert!(json[1]["unsubscribed_at"].is_null() && json[1]["name"].is_null());
    assert_eq!(json[2]["name"], "Thi, Rd");
    assert_eq!(json[2]["source"], "import");
    assert!(json[2]["confirmed_at"].as_str().is_some_and(rfc3339));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).expect("meta").permissions().mode();
        assert_eq!(mode & 0o077, 0, "an export is private: {mode:o}");
    }

    // An empty list is still a valid document.
    let (_db2, _store2, empty) = setup(backend).await;
    assert_eq!(
        empty.run(&["export", "--format", "json"]).ok().stdout,
        "[]\n"
    );
    assert_eq!(
        empty.run(&["export"]).ok().stdout.trim(),
        "email,name,status,source,created_at,confirmed_at,unsubscribed_at,registrations"
    );
}

async fn remove_unsubscribes_idempotently(backend: Backend) {
    let app = spawn_app(backend).await;
    let cli = Cli {
        db_url: app.db.url.clone(),
        key: app.token_key().to_owned(),
    };
    // A pending person holds a live confirmation link; removal must spend it.
    assert_eq!(app.subscribe("Pat@Example.org", "Pat").await.status(), 200);
    assert_eq!(
        app.status_of("pat@example.org").await.as_deref(),
        Some("pending")
    );

    let out = cli.run(&["remove", "PAT@example.org"]).ok();
    assert!(out.stdout.starts_with("removed"), "{}", out.stdout);
    assert_eq!(
        app.status_of("pat@example.org").await.as_deref(),
        Some("unsubscribed")
    );
    let row = sqlx::query(
        "SELECT id, unsubscribed_at FROM subscribers WHERE email_key = 'pat@example.org'",
    )
    .fetch_one(app.store.pool())
    .await
    .expect("row");
    assert!(row.get::<Option<i64>, _>("unsubscribed_at").is_some());
    let id: i64 = row.get("id");
    let live = "SELECT COUNT(*) FROM tokens WHERE subscriber_id = $1 AND used_at IS NULL";
    assert_eq!(
        count(&app.store, live, id).await,
        0,
        "outstanding confirmation links are spent"
    );

    // Again: still unsubscribed, still success.
    let again = cli.run(&["remove", "pat@example.org"]).ok();
    assert!(
        again.stdout.contains("already unsubscribed"),
        "{}",
        again.stdout
    );
    assert_eq!(
        app.status_of("pat@example.org").await.as_deref(),
        Some("unsubscribed")
    );

    let unknown = cli.run(&["remove", "nobody@example.org"]).ok();
    assert_eq!(unknown.stdout.trim(), "not on the list: nobody@example.org");

    let invalid = cli.run(&["remove", "not an address"]);
    assert_eq!(invalid.code, Some(1));
    assert!(
        invalid.stderr.contains("not a valid email address"),
        "{}",
        invalid.stderr
    );
}

async fn forget_erases_the_person_and_blocks_reimport(backend: Backend) {
    let app = spawn_app(backend).await;
    let cli = Cli {
        db_url: app.db.url.clone(),
        key: app.token_key().to_owned(),
    };
    let store = &app.store;
    // Through the web flow, so there is a token, a confirmation mailing and its delivery.
    assert_eq!(
        app.subscribe("gone@example.org", "Gone").await.status(),
        200
    );
    let id: i64 = sqlx::query("SELECT id FROM subscribers WHERE email_key = 'gone@example.org'")
        .fetch_one(store.pool())
        .await
        .expect("row")
        .get(0);
    let owned = [
        "SELECT COUNT(*) FROM tokens WHERE subscriber_id = $1",
        "SELECT COUNT(*) FROM mailings WHERE subscriber_id = $1",
        "SELECT COUNT(*) FROM deliveries WHERE subscriber_id = $1",
    ];
    for sql in owned {
        assert_eq!(count(store, sql, id).await, 1, "{sql}");
    }

    let out = cli.run(&["forget", "Gone@example.org"]).ok();
    assert!(
        out.stdout.starts_with("forgot Gone@example.org") && out.stdout.contains("suppressed"),
        "{}",
        out.stdout
    );
    assert_eq!(app.status_of("gone@example.org").await, None);
    for sql in owned {
        assert_eq!(count(store, sql, id).await, 0, "{sql}");
    }
    let hash = suppression_hash("gone@example.org");
    assert_eq!(
        count(
            store,
            "SELECT COUNT(*) FROM suppressions WHERE hash = $1",
            hash
        )
        .await,
        1
    );
    assert!(
        store
            .is_suppressed("gone@example.org")
            .await
            .expect("check")
    );

    // Forgetting again, or an address never seen, still succeeds and says so.
    let again = cli.run(&["forget", "gone@example.org"]).ok();
    assert!(
        again.stdout.contains("not on the list") && again.stdout.contains("already suppressed"),
        "{}",
        again.stdout
    );

    // A later import does not bring them back.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("old-list.csv");
    std::fs::write(&file, "email\nGONE@example.org\nstays@example.org\n").expect("write");
    let out = cli.run(&["import", path(&file)]).ok();
    assert_eq!(
        out.summary(),
        "imported 1, already on the list 0, suppressed 1, bad rows 0"
    );
    assert_eq!(app.status_of("gone@example.org").await, None);
    assert_eq!(
        app.status_of("stays@example.org").await.as_deref(),
        Some("active")
    );

    let invalid = cli.run(&["forget", "gone@"]);
    assert_eq!(invalid.code, Some(1));
}

/// Everyone on the list as (email, status, name), by address.
async fn people(store: &Store) -> Vec<(String, String, Option<String>)> {
    let mut rows: Vec<_> = store
        .list_subscribers()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.email, s.status.as_str().to_owned(), s.name))
        .collect();
    rows.sort();
    rows
}

fn expected(rows: &[(&str, &str, Option<&str>)]) -> Vec<(String, String, Option<String>)> {
    rows.iter()
        .map(|&(email, status, name)| (email.into(), status.into(), name.map(str::to_owned)))
        .collect()
}

async fn import_reads_a_google_groups_export_with_its_statuses(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let out = cli
        .run(&["import", "tests/fixtures/import/google_groups.csv"])
        .ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by commas",
            "columns used: email \"Email address\", name \"Nickname\", status \"Group status\", \"Email status\" and \"Email preference\"",
            "columns ignored: \"Posting permissions\", \"Join year\", \"Join month\", \"Join day\", \"Join hour\", \"Join minute\", \"Join second\", \"Time zone\"",
            "imported 7 (4 active, 2 unsubscribed, 1 bouncing; only the active get mail), already on the list 0, suppressed 0, bad rows 0",
        ],
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(out.stderr, "");
    assert_eq!(
        people(&store).await,
        expected(&[
            ("ana@example.org", "active", Some("Ana Alvarez")),
            ("ben@example.org", "active", None),
            ("cho@example.org", "active", Some("Cho Lin")),
            ("dev@example.org", "bouncing", Some("Dev Patel")),
            ("eli@example.org", "active", Some("Eli Moss, Jr.")),
            ("fay@example.org", "unsubscribed", Some("Fay")),
            // "No email": a member who asked for none gets none here either.
            ("gil@example.org", "unsubscribed", Some("Gil Ortiz")),
        ])
    );
    // Left on the old list means left here, from the import on.
    let left = "SELECT COUNT(*) FROM subscribers WHERE status = $1 AND unsubscribed_at IS NOT NULL AND source = 'import'";
    assert_eq!(count(&store, left, "unsubscribed".to_owned()).await, 2);
    let again = cli
        .run(&["import", "tests/fixtures/import/google_groups.csv"])
        .ok();
    assert_eq!(
        again.summary(),
        "imported 0, already on the list 7, suppressed 0, bad rows 0"
    );
}

async fn import_reads_mailchimp_audience_exports(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let key = TokenKey::parse(&cli.key).expect("key");
    // Known here already: an unsubscribed export does not change them.
    seed(&store, &key, "vic@example.org", "active").await;
    let ignored_common = "\"Address\", \"Phone Number\", \"MEMBER_RATING\", \"OPTIN_TIME\", \"OPTIN_IP\", \"CONFIRM_TIME\", \"CONFIRM_IP\", \"LATITUDE\", \"LONGITUDE\", \"GMTOFF\", \"DSTOFF\", \"TIMEZONE\", \"CC\", \"REGION\"";
    let tail = "\"LEID\", \"EUID\", \"NOTES\", \"TAGS\"";

    let out = cli
        .run(&["import", "tests/fixtures/import/mailchimp_subscribed.csv"])
        .ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by commas".to_owned(),
            "columns used: email \"Email Address\", name \"First Name\" + \"Last Name\"".to_owned(),
            format!("columns ignored: {ignored_common}, \"LAST_CHANGED\", {tail}"),
            "imported 4, already on the list 0, suppressed 0, bad rows 0".to_owned(),
        ],
        "stderr:\n{}",
        out.stderr
    );

    let out = cli
        .run(&["import", "tests/fixtures/import/mailchimp_unsubscribed.csv"])
        .ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by commas".to_owned(),
            "columns used: email \"Email Address\", name \"First Name\" + \"Last Name\", \"UNSUB_TIME\" (every row unsubscribed)".to_owned(),
            format!("columns ignored: {ignored_common}, \"UNSUB_CAMPAIGN_TITLE\", \"UNSUB_CAMPAIGN_ID\", \"UNSUB_REASON\", \"UNSUB_REASON_OTHER\", {tail}"),
            "imported 1 (0 active, 1 unsubscribed, 0 bouncing; only the active get mail), already on the list 1, suppressed 0, bad rows 0".to_owned(),
        ],
        "stderr:\n{}",
        out.stderr
    );

    let out = cli
        .run(&["import", "tests/fixtures/import/mailchimp_cleaned.csv"])
        .ok();
    assert_eq!(
        out.lines()[1],
        "columns used: email \"Email Address\", name \"First Name\" + \"Last Name\", \"CLEAN_TIME\" (every row bouncing)"
    );
    assert_eq!(
        out.summary(),
        "imported 1 (0 active, 0 unsubscribed, 1 bouncing; only the active get mail), already on the list 0, suppressed 0, bad rows 0"
    );

    assert_eq!(
        people(&store).await,
        expected(&[
            ("ana@example.org", "active", Some("Ana Alvarez")),
            ("ben@example.org", "active", Some("Ben")),
            ("cal@example.org", "active", Some("Cole")),
            ("dot@example.org", "active", None),
            ("uma@example.org", "unsubscribed", Some("Uma Ueda")),
            ("vic@example.org", "active", None),
            ("wes@example.org", "bouncing", Some("Wes West")),
        ])
    );
}

async fn import_reads_mailman_members_output(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let text_format = "format: text, one address per line (Name <address> or the address alone)";
    let out = cli
        .run(&["import", "tests/fixtures/import/mailman_members.txt"])
        .ok();
    assert_eq!(
        out.lines(),
        [
            text_format,
            "imported 5, already on the list 0, suppressed 0, bad rows 0"
        ],
        "stderr:\n{}",
        out.stderr
    );
    assert_eq!(
        people(&store).await,
        expected(&[
            ("anne@example.org", "active", Some("Anne Person")),
            ("bart@example.org", "active", None),
            ("jane@example.org", "active", Some("Doe, Jane")),
            ("jsmith@example.org", "active", Some("J. Smith")),
            ("zoe@example.org", "active", Some("Zoë Ñ")),
        ])
    );
    // Bare addresses (`mailman members --email-only`, Mailman 2's `list_members`).
    let out = cli
        .run(&[
            "import",
            "--format",
            "text",
            "tests/fixtures/import/mailman_addresses.txt",
        ])
        .ok();
    assert_eq!(
        out.lines(),
        [
            text_format,
            "imported 0, already on the list 3, suppressed 0, bad rows 0"
        ]
    );

    // Bad lines are reported by number, through CRLF and blank lines, never quoted.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("members.txt");
    std::fs::write(
        &file,
        "Anne Person <anne@example.org>\r\n\r\nnot an address\r\nNew One <new@example.org>\r\n",
    )
    .expect("write");
    let out = cli.run(&["import", path(&file)]).ok();
    assert_eq!(
        out.summary(),
        "imported 1, already on the list 1, suppressed 0, bad rows 1"
    );
    assert!(
        out.stderr.starts_with("line 3: invalid email address") && !out.stderr.contains("not an"),
        "{}",
        out.stderr
    );
    assert_eq!(
        row_of(&store, "new@example.org").await,
        Some(("active".into(), "import".into(), Some("New One".into())))
    );
}

async fn import_reads_an_excel_semicolon_export_with_bom_and_crlf(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let out = cli
        .run(&["import", "tests/fixtures/import/excel_semicolon.csv"])
        .ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by semicolons",
            "columns used: email \"E-Mail\", name \"Name\"",
            "columns ignored: \"Organisation\", \"Telefon\"",
            "imported 3, already on the list 0, suppressed 0, bad rows 1",
        ]
    );
    assert_eq!(
        out.stderr.trim(),
        "line 5: invalid email address: An email address needs exactly one @, like name@example.org."
    );
    assert_eq!(
        people(&store).await,
        expected(&[
            ("jane@example.org", "active", Some("Doe, Jane")),
            ("lee@example.org", "active", None),
            ("zoe@example.org", "active", Some("Zoë Ñ")),
        ])
    );
}

async fn import_takes_column_delimiter_and_format_overrides(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let dir = tempfile::tempdir().expect("dir");
    let write = |name: &str, text: &str| {
        let file = dir.path().join(name);
        std::fs::write(&file, text).expect("write");
        file
    };
    let failed = |out: Run, words: &str| {
        assert_eq!(out.code, Some(1), "{}", out.stderr);
        assert!(out.stderr.contains(words), "{}", out.stderr);
    };

    // Headers that are not the usual ones: the error names them and the option to use.
    let other = write("other.csv", "Contact,Person\nkit@example.org,Kit\n");
    failed(
        cli.run(&["import", path(&other)]),
        "has no email column; found: Contact, Person — say which column holds the addresses with --email-column 'COLUMN'",
    );
    failed(
        cli.run(&["import", "--email-column", "Nope", path(&other)]),
        "--email-column 'Nope' names no column of",
    );
    let out = cli
        .run(&[
            "import",
            "--email-column",
            "contact",
            "--name-column",
            "PERSON",
            path(&other),
        ])
        .ok();
    assert_eq!(
        out.lines()[1..],
        [
            "columns used: email \"Contact\", name \"Person\"",
            "imported 1, already on the list 0, suppressed 0, bad rows 0",
        ]
    );

    // As many commas as semicolons in the header: comma is guessed, --delimiter corrects it.
    let tie = write(
        "tie.csv",
        "Email;Name, as given\nsol@example.org;Sol, Jr.\n",
    );
    failed(cli.run(&["import", path(&tie)]), "has no email column");
    let out = cli
        .run(&[
            "import",
            "--delimiter",
            ";",
            "--name-column",
            "Name, as given",
            path(&tie),
        ])
        .ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by semicolons",
            "columns used: email \"Email\", name \"Name, as given\"",
            "imported 1, already on the list 0, suppressed 0, bad rows 0",
        ]
    );

    // Tabs are found by themselves.
    let tabs = write(
        "tabs.tsv",
        "E-mail\tFull name\tNotes\ntab@example.org\tTab Person\tsee, also\n",
    );
    let out = cli.run(&["import", path(&tabs)]).ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by tabs",
            "columns used: email \"E-mail\", name \"Full name\"",
            "columns ignored: \"Notes\"",
            "imported 1, already on the list 0, suppressed 0, bad rows 0",
        ]
    );

    // A text list whose first line is not an address is taken for a header, unless told.
    let list = write("list.txt", "not-an-address\nmo@example.org\n");
    failed(
        cli.run(&["import", path(&list)]),
        "has no email column; found: not-an-address",
    );
    let out = cli.run(&["import", "--format", "text", path(&list)]).ok();
    assert_eq!(
        out.summary(),
        "imported 1, already on the list 0, suppressed 0, bad rows 1"
    );
    assert!(
        out.stderr.starts_with("line 1: invalid email address"),
        "{}",
        out.stderr
    );

    failed(
        cli.run(&[
            "import",
            "--format",
            "text",
            "--email-column",
            "x",
            path(&list),
        ]),
        "are for CSV files, not --format text",
    );
    let out = cli.run(&["import", "--delimiter", "|", path(&list)]);
    assert_eq!(out.code, Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("use comma, semicolon or tab"),
        "{}",
        out.stderr
    );

    assert_eq!(
        people(&store).await,
        expected(&[
            ("kit@example.org", "active", Some("Kit")),
            ("mo@example.org", "active", None),
            ("sol@example.org", "active", Some("Sol, Jr.")),
            ("tab@example.org", "active", Some("Tab Person")),
        ])
    );
}

async fn import_lists_status_words_it_does_not_know(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("statuses.csv");
    std::fs::write(
        &file,
        "Email,Status\ns1@example.org,subscribed\ns2@example.org,pending\ns3@example.org,pending\n\
         s4@example.org,VIP\ns5@example.org,Unsubscribed\ns6@example.org,cleaned\ns7@example.org,banned\n",
    )
    .expect("write");
    let out = cli.run(&["import", path(&file)]).ok();
    assert_eq!(
        out.lines(),
        [
            "format: CSV separated by commas",
            "columns used: email \"Email\", status \"Status\"",
            "status words not known, so read as active: \"VIP\" (1 row), \"pending\" (2 rows)",
            "imported 7 (4 active, 2 unsubscribed, 1 bouncing; only the active get mail), already on the list 0, suppressed 0, bad rows 0",
        ]
    );
    let statuses: Vec<(String, String)> = people(&store)
        .await
        .into_iter()
        .map(|(email, status, _)| (email, status))
        .collect();
    let want: Vec<(String, String)> = [
        ("s1", "active"),
        ("s2", "active"),
        ("s3", "active"),
        ("s4", "active"),
        ("s5", "unsubscribed"),
        ("s6", "bouncing"),
        ("s7", "unsubscribed"),
    ]
    .iter()
    .map(|(who, status)| (format!("{who}@example.org"), (*status).to_owned()))
    .collect();
    assert_eq!(statuses, want);
}

/// The fan-out after an import reaches only the people the old list still mailed.
async fn imported_people_who_left_or_bounced_get_no_announcement(backend: Backend) {
    // a@ and b@ are active already; p@ is pending and u@ unsubscribed.
    let mut w = World::new(backend, "2027-01-01T00:00:00Z").await;
    let cli = Cli {
        db_url: w.db_url().to_owned(),
        key: w
            .settings
            .security
            .token_key
            .as_ref()
            .map(|k| harborlist::domain::Secret::expose(k).to_owned())
            .expect("token key"),
    };
    for file in [
        "google_groups.csv",
        "mailchimp_unsubscribed.csv",
        "mailchimp_cleaned.csv",
    ] {
        cli.run(&["import", &format!("tests/fixtures/import/{file}")])
            .ok();
    }
    w.reconfigure(|s| {
        s.announcements.push(announcement(
            "moved",
            "2027-01-06T15:00:00Z".parse().expect("instant"),
            "The list has moved",
        ))
    });
    w.turn_at("2027-01-06T15:00:00Z").await;
    let mut reached = w.deliveries("announcement:moved").await;
    reached.sort();
    assert_eq!(
        reached,
        [
            "a@example.org",
            "ana@example.org",
            "b@example.org",
            "ben@example.org",
            "cho@example.org",
            "eli@example.org",
        ]
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn each_command_explains_itself() {
    for (cmd, words) in [
        ("export", &["--format", "--output", "csv"][..]),
        (
            "import",
            &[
                "email",
                "name",
                "unsubscribed",
                "line N",
                "--email-column",
                "--delimiter",
                "--format",
                "Name <address>",
                "bouncing",
                "UNSUB_TIME",
            ][..],
        ),
        ("remove", &["unsubscribe", "not on the list"][..]),
        ("forget", &["Erase", "import"][..]),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_harborlist"))
            .args(["subscribers", cmd, "--help"])
            .output()
            .expect("help");
        assert!(out.status.success());
        // Help is wrapped to the terminal's width: compare with the line breaks taken out.
        let text = String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for w in words {
            assert!(
                text.contains(w),
                "`subscribers {cmd} --help` lacks {w}:\n{text}"
            );
        }
    }
}
