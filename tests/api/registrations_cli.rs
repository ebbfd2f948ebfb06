//! `harborlist registrations …`, `trainings`, `status`, `check` and `subscribers forget`
//! / `export` as they concern registrations, through the real binary against a fresh
//! database on each backend; results are read back as the staff would see them, and with
//! SQL where the point is what is stored.

use std::{path::Path, process::Command};

use harborlist::{
    calendar::Session,
    config::Sources,
    domain::{TokenKey, TokenPurpose},
    store::Store,
};
use serde_json::Value;
use sqlx::Row;

use crate::{
    both_backends,
    helpers::{Backend, TestDb, seed},
};

both_backends!(
    trainings_json_has_seats_and_registration_state,
    list_shows_everyone_as_json_table_and_a_safe_private_sign_in_sheet,
    add_waitlists_when_full_and_over_capacity_gives_a_seat,
    cancel_passes_the_seat_to_the_waiting_list,
    attended_and_report_count_what_funders_ask,
    forget_erases_registrations_but_keeps_the_counts,
    registrants_who_never_joined_are_not_list_members,
    status_shows_seats_and_attendance,
    check_warns_when_capacity_is_below_the_seats_held,
    key_rotation_keeps_registration_links_working,
);

/// The binary against one database, with none of the developer's HARBORLIST* settings.
struct Cli {
    db_url: String,
    key: String,
    env: Vec<(String, String)>,
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Cli {
    fn with(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    fn run(&self, args: &[&str]) -> Run {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_harborlist"));
        cmd.current_dir(env!("CARGO_MANIFEST_DIR"));
        for (k, _) in std::env::vars() {
            if k.starts_with("HARBORLIST") {
                cmd.env_remove(k);
            }
        }
        cmd.args(args)
            .env("HARBORLIST__DATABASE__URL", &self.db_url)
            .env("HARBORLIST__SECURITY__TOKEN_KEY", &self.key);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        let out = cmd.output().expect("run harborlist");
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn reg(&self, args: &[&str]) -> Run {
        let mut all = vec!["registrations"];
        all.extend_from_slice(args);
        self.run(&all)
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

    #[track_caller]
    fn fails(self) -> Self {
        assert_eq!(
            self.code,
            Some(1),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}", self.stdout))
    }
}

/// A fresh database (migrated), a store on it, and the CLI pointed at it.
async fn setup(backend: Backend) -> (TestDb, Store, Cli) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    let cli = Cli {
        db_url: db.url.clone(),
        key: TokenKey::generate_text(),
        env: Vec::new(),
    };
    (db, store, cli)
}

/// The default calendar, as the binary computes it.
fn calendar() -> harborlist::calendar::Calendar {
    Sources::new(None)
        .load()
        .expect("default settings")
        .calendar()
        .expect("calendar")
}

fn next_session() -> Session {
    calendar()
        .upcoming(chrono::Utc::now(), 1)
        .pop()
        .expect("an upcoming training")
}

/// The last session that has already taken place.
fn past_session() -> Session {
    let now = chrono::Utc::now();
    calendar()
        .sessions_between(
            now - chrono::Duration::days(200),
            now - chrono::Duration::hours(3),
        )
        .into_iter()
        .rfind(|s| !s.cancelled)
        .expect("a past training")
}

/// The registration mails queued for an address, by template, oldest first.
async fn letters(store: &Store, email: &str) -> Vec<String> {
    sqlx::query(
        "SELECT m.template FROM mailings m JOIN subscribers s ON s.id = m.subscriber_id
         WHERE m.kind = 'registration' AND s.email_key = $1 ORDER BY m.id",
    )
    .bind(email.to_lowercase())
    .fetch_all(store.pool())
    .await
    .expect("mailings")
    .iter()
    .map(|r| r.try_get::<String, _>("template").expect("template"))
    .collect()
}

fn status_of<'a>(rows: &'a Value, email: &str) -> &'a str {
    rows.as_array()
        .expect("array")
        .iter()
        .find(|r| r["email"] == email)
        .and_then(|r| r["status"].as_str())
        .unwrap_or_else(|| panic!("{email} not in {rows:#}"))
}

async fn trainings_json_has_seats_and_registration_state(backend: Backend) {
    let db = TestDb::new(backend).await;
    let id = next_session().id;
    let fresh = Cli {
        db_url: db.url.clone(),
        key: TokenKey::generate_text(),
        env: Vec::new(),
    }
    .with("HARBORLIST__TRAININGS__CAPACITY", "1");
    // Nothing set up yet (no file, or a database without tables): nobody registered.
    let out = fresh.run(&["trainings", "--json", "--count", "2"]).ok();
    let list = out.json();
    let first = &list[0];
    assert_eq!(first["id"], id.as_str());
    for (field, value) in [
        ("capacity", 1),
        ("registered", 0),
        ("waitlisted", 0),
        ("seats_left", 1),
    ] {
        assert_eq!(first[field], value, "{field} in {first:#}");
    }
    assert_eq!(first["registration"], "open");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    if backend == Backend::Sqlite {
        let path = db.url.trim_start_matches("sqlite://");
        assert!(!Path::new(path).exists(), "trainings creates no database");
    }

    let _store = Store::connect(&db.url, 2).await.expect("store");
    fresh.reg(&["add", "--training", &id, "a@example.org"]).ok();
    fresh.reg(&["add", "--training", &id, "b@example.org"]).ok();
    let list = fresh
        .run(&["trainings", "--json", "--count", "2"])
        .ok()
        .json();
    let first = &list[0];
    assert_eq!(
        (
            &first["registered"],
            &first["waitlisted"],
            &first["seats_left"],
            &first["registration"]
        ),
        (
            &Value::from(1),
            &Value::from(1),
            &Value::from(0),
            &Value::from("full")
        ),
        "{first:#}"
    );
    assert_eq!(list[1]["registration"], "open");
    let table = fresh.run(&["trainings", "--count", "1"]).ok().stdout;
    assert!(
        table.contains(&id) && table.contains("full (1/1), 1 waiting"),
        "{table}"
    );

    let external = fresh.with("HARBORLIST__REGISTRATION__MODE", "external");
    let list = external
        .run(&["trainings", "--json", "--count", "1"])
        .ok()
        .json();
    assert_eq!(list[0]["registration"], "external");

    let past = past_session();
    let list = Cli {
        db_url: db.url.clone(),
        key: TokenKey::generate_text(),
        env: Vec::new(),
    }
    .run(&["trainings", "--json", "--count", "1", "--from", &past.id])
    .ok()
    .json();
    assert_eq!(list[0]["registration"], "closed");

    // A database that cannot be reached: the calendar still shows, counts are null.
    let unreachable = Cli {
        db_url: "postgres://nobody@127.0.0.1:1/none".into(),
        key: TokenKey::generate_text(),
        env: Vec::new(),
    };
    let out = unreachable
        .run(&["trainings", "--json", "--count", "1"])
        .ok();
    let list = out.json();
    assert!(list[0]["registered"].is_null() && list[0]["seats_left"].is_null());
    assert_eq!(list[0]["registration"], "open");
    assert!(
        out.stderr.contains("seat counts are not shown"),
        "{}",
        out.stderr
    );
}

async fn list_shows_everyone_as_json_table_and_a_safe_private_sign_in_sheet(backend: Backend) {
    let (_db, _store, cli) = setup(backend).await;
    let cli = cli.with("HARBORLIST__TRAININGS__CAPACITY", "2");
    let id = next_session().id;
    cli.reg(&[
        "add",
        "--training",
        &id,
        "ann@example.org",
        "--name",
        "Ann Lee",
        "--organisation",
        "YouthLink",
    ])
    .ok();
    cli.reg(&[
        "add",
        "--training",
        &id,
        "eve@example.org",
        "--name",
        "=HYPERLINK(\"http://evil.test\")",
        "--organisation",
        "@SUM(A1)",
    ])
    .ok();
    cli.reg(&[
        "add",
        "--training",
        &id,
        "wait@example.org",
        "--name",
        "Wai Ting",
    ])
    .ok();

    let rows = cli.reg(&["list", "--training", &id, "--json"]).ok().json();
    let rows_again = cli
        .reg(&["list", "--training", &id, "--format", "json"])
        .ok()
        .json();
    assert_eq!(rows, rows_again);
    let arr = rows.as_array().expect("array");
    assert_eq!(arr.len(), 3);
    for field in [
        "email",
        "name",
        "organisation",
        "status",
        "position",
        "registered_at",
    ] {
        assert!(
            arr.iter().all(|r| r.get(field).is_some()),
            "{field} missing: {rows:#}"
        );
    }
    assert_eq!(arr[0]["email"], "ann@example.org");
    assert_eq!(arr[0]["name"], "Ann Lee");
    assert_eq!(arr[0]["organisation"], "YouthLink");
    assert_eq!(arr[0]["status"], "registered");
    assert!(arr[0]["position"].is_null());
    assert!(
        arr[0]["registered_at"]
            .as_str()
            .is_some_and(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
    );
    assert_eq!(arr[2]["email"], "wait@example.org");
    assert_eq!(arr[2]["status"], "waitlisted");
    assert_eq!(arr[2]["position"], 1);

    let table = cli.reg(&["list", "--training", &id]).ok().stdout;
    assert!(
        table.contains("Ann Lee")
            && table.contains("wait@example.org")
            && table.contains("waitlisted")
            && table.contains("3 registration(s)"),
        "{table}"
    );

    // The sign-in sheet: those with a seat, formula cells marked, private.
    let dir = tempfile::tempdir().expect("dir");
    let sheet = dir.path().join("sign-in.csv");
    std::fs::write(&sheet, "old, readable by all").expect("write");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&sheet, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    }
    let out = cli
        .reg(&["list", "--training", &id, "-o", path(&sheet)])
        .ok();
    assert!(
        out.stdout.contains("wrote 2 registration(s)"),
        "{}",
        out.stdout
    );
    let text = std::fs::read_to_string(&sheet).expect("read sheet");
    let mut csv = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = csv
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "name",
            "organisation",
            "email",
            "status",
            "position",
            "registered_at",
            "attended"
        ]
    );
    let records: Vec<csv::StringRecord> = csv.records().map(|r| r.expect("row")).collect();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(&records[0][0], "Ann Lee");
    assert_eq!(&records[1][0], "'=HYPERLINK(\"http://evil.test\")");
    assert_eq!(&records[1][1], "'@SUM(A1)");
    assert!(!text.contains("wait@example.org"));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sheet)
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the sheet is private: {mode:o}");
    }
    let all = cli
        .reg(&["list", "--training", &id, "--format", "csv", "--all"])
        .ok()
        .stdout;
    assert!(all.contains("wait@example.org,waitlisted,1,"), "{all}");

    // An unknown training names the upcoming ones; nothing is opened.
    let out = cli.reg(&["list", "--training", "2027-13-01"]).fails();
    assert!(
        out.stderr.contains("\"2027-13-01\"") && out.stderr.contains(&id),
        "{}",
        out.stderr
    );
}

async fn add_waitlists_when_full_and_over_capacity_gives_a_seat(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let cli = cli.with("HARBORLIST__TRAININGS__CAPACITY", "1");
    let id = next_session().id;
    let out = cli
        .reg(&["add", "--training", &id, "first@example.org"])
        .ok();
    assert!(
        out.stdout.contains("registered first@example.org") && out.stdout.contains("queued"),
        "{}",
        out.stdout
    );
    let out = cli
        .reg(&["add", "--training", &id, "second@example.org"])
        .ok();
    assert!(
        out.stdout.contains("waiting list, number 1") && out.stdout.contains("--over-capacity"),
        "{}",
        out.stdout
    );
    let out = cli
        .reg(&["add", "--training", &id, "first@example.org"])
        .ok();
    assert!(out.stdout.contains("already registered"), "{}", out.stdout);

    // Someone on the waiting list, and someone new, get a seat over the capacity.
    cli.reg(&[
        "add",
        "--training",
        &id,
        "second@example.org",
        "--over-capacity",
    ])
    .ok();
    cli.reg(&[
        "add",
        "--training",
        &id,
        "third@example.org",
        "--over-capacity",
    ])
    .ok();
    let rows = cli.reg(&["list", "--training", &id, "--json"]).ok().json();
    for e in [
        "first@example.org",
        "second@example.org",
        "third@example.org",
    ] {
        assert_eq!(status_of(&rows, e), "registered", "{e}");
    }
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["position"].is_null())
    );
    let list = cli
        .run(&["trainings", "--json", "--count", "1"])
        .ok()
        .json();
    assert_eq!(
        (&list[0]["registered"], &list[0]["seats_left"]),
        (&Value::from(3), &Value::from(0))
    );

    // Each got the mail the store queues for the daemon to send.
    assert_eq!(letters(&store, "first@example.org").await, ["registered"]);
    assert_eq!(
        letters(&store, "second@example.org").await,
        ["waitlisted", "registered"]
    );
    assert_eq!(letters(&store, "third@example.org").await, ["registered"]);
    let source: String = sqlx::query(
        "SELECT r.source FROM registrations r JOIN subscribers s ON s.id = r.subscriber_id WHERE s.email_key = $1",
    )
    .bind("third@example.org")
    .fetch_one(store.pool())
    .await
    .expect("row")
    .try_get("source")
    .expect("source");
    assert_eq!(source, "staff");

    // Bad input is refused before anything is written.
    let out = cli
        .reg(&["add", "--training", &id, "not-an-address"])
        .fails();
    assert!(
        out.stderr.contains("not a valid email address"),
        "{}",
        out.stderr
    );
    let out = cli
        .reg(&[
            "add",
            "--training",
            &id,
            "x@example.org",
            "--name",
            "a\u{7}b",
        ])
        .fails();
    assert!(out.stderr.contains("--name"), "{}", out.stderr);
    let out = cli
        .reg(&["add", "--training", "nope", "x@example.org"])
        .fails();
    assert!(
        out.stderr.contains("\"nope\"") && out.stderr.contains(&id),
        "{}",
        out.stderr
    );

    // After the close, only with --over-capacity (a walk-in).
    let past = past_session().id;
    let out = cli
        .reg(&["add", "--training", &past, "late@example.org"])
        .fails();
    assert!(out.stderr.contains("closed"), "{}", out.stderr);
    cli.reg(&[
        "add",
        "--training",
        &past,
        "late@example.org",
        "--over-capacity",
    ])
    .ok();
}

async fn cancel_passes_the_seat_to_the_waiting_list(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let cli = cli.with("HARBORLIST__TRAININGS__CAPACITY", "1");
    let id = next_session().id;
    cli.reg(&["add", "--training", &id, "seat@example.org"])
        .ok();
    cli.reg(&["add", "--training", &id, "next@example.org"])
        .ok();
    cli.reg(&["add", "--training", &id, "later@example.org"])
        .ok();

    let out = cli
        .reg(&["cancel", "--training", &id, "SEAT@example.org"])
        .ok();
    assert!(
        out.stdout.contains("cancelled") && out.stdout.contains("offered to the next person"),
        "{}",
        out.stdout
    );
    let rows = cli.reg(&["list", "--training", &id, "--json"]).ok().json();
    assert_eq!(status_of(&rows, "seat@example.org"), "cancelled");
    assert_eq!(status_of(&rows, "next@example.org"), "offered");
    assert_eq!(status_of(&rows, "later@example.org"), "waitlisted");
    assert_eq!(
        letters(&store, "next@example.org").await,
        ["waitlisted", "seat_offer"]
    );
    assert_eq!(letters(&store, "seat@example.org").await, ["registered"]);

    // Leaving the waiting list frees no seat; cancelling twice is harmless.
    let out = cli
        .reg(&["cancel", "--training", &id, "later@example.org"])
        .ok();
    assert!(!out.stdout.contains("offered"), "{}", out.stdout);
    let out = cli
        .reg(&["cancel", "--training", &id, "seat@example.org"])
        .ok();
    assert!(out.stdout.contains("nothing to cancel"), "{}", out.stdout);
    let out = cli
        .reg(&["cancel", "--training", &id, "nobody@example.org"])
        .ok();
    assert!(out.stdout.contains("no registration"), "{}", out.stdout);
    let status = cli.run(&["status"]).ok().stdout;
    assert!(
        status.contains("1 / 1 registered, 0 waitlisted, 1 offer(s) open")
            || status.contains("0 / 1 registered, 0 waitlisted, 1 offer(s) open"),
        "{status}"
    );
}

/// Registers `who` (address, organisation) for the past session, over the capacity.
fn walk_ins(cli: &Cli, session: &str, who: &[(&str, Option<&str>)]) {
    for (email, org) in who {
        let mut args = vec!["add", "--training", session, email, "--over-capacity"];
        if let Some(org) = org {
            args.extend(["--organisation", org]);
        }
        cli.reg(&args).ok();
    }
}

async fn attended_and_report_count_what_funders_ask(backend: Backend) {
    let (_db, _store, cli) = setup(backend).await;
    let past = past_session();
    let id = past.id.clone();
    walk_ins(
        &cli,
        &id,
        &[
            ("a@example.org", Some("YouthLink")),
            ("b@example.org", Some(" youthlink ")),
            ("c@example.org", Some("Other Org")),
            ("d@example.org", None),
        ],
    );
    // Before the training: refused.
    let upcoming = next_session().id;
    let out = cli
        .reg(&["attended", "--training", &upcoming, "a@example.org"])
        .fails();
    assert!(out.stderr.contains("has not started"), "{}", out.stderr);

    // The sign-in sheet, ticked in its "attended" column.
    let dir = tempfile::tempdir().expect("dir");
    let sheet = dir.path().join("sheet.csv");
    cli.reg(&["list", "--training", &id, "-o", path(&sheet)])
        .ok();
    let ticked: String = std::fs::read_to_string(&sheet)
        .expect("sheet")
        .lines()
        .map(|l| {
            if l.contains("a@example.org") || l.contains("c@example.org") {
                format!("{l}x\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(&sheet, ticked).expect("write");
    let out = cli
        .reg(&["attended", "--training", &id, "--file", path(&sheet)])
        .ok();
    assert!(out.stdout.contains("marked 2 attended"), "{}", out.stdout);
    // Addresses on the command line; an unknown one is reported, the rest marked.
    let out = cli
        .reg(&[
            "attended",
            "--training",
            &id,
            "a@example.org",
            "zed@example.org",
        ])
        .fails();
    assert!(out.stdout.contains("marked 1 attended"), "{}", out.stdout);
    assert!(
        out.stderr.contains("zed@example.org: no registration"),
        "{}",
        out.stderr
    );

    let day = past.start.date_naive().to_string();
    let report = cli
        .reg(&["report", "--from", &day, "--to", &day, "--json"])
        .ok()
        .json();
    let line = &report["trainings"][0];
    assert_eq!(line["id"], id.as_str(), "{report:#}");
    for (field, n) in [
        ("registered", 4),
        ("waitlisted", 0),
        ("attended", 2),
        ("no_shows", 2),
        ("organisations", 2),
        ("organisations_attended", 2),
    ] {
        assert_eq!(line[field], n, "{field}: {report:#}");
    }
    assert_eq!(report["total"]["organisations"], 2);
    let csv_text = cli
        .reg(&["report", "--from", &day, "--to", &day, "--format", "csv"])
        .ok()
        .stdout;
    let mut csv = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = csv
        .headers()
        .expect("header")
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        &header[..9],
        [
            "training",
            "start",
            "capacity",
            "registered",
            "waitlisted",
            "attended",
            "no_shows",
            "cancellations",
            "organisations"
        ]
    );
    let records: Vec<csv::StringRecord> = csv.records().map(|r| r.expect("row")).collect();
    assert_eq!(&records[0][0], id.as_str());
    assert_eq!(&records[0][3], "4");
    assert_eq!(&records[0][6], "2");
    assert_eq!(&records[1][0], "total");
    let table = cli
        .reg(&["report", "--from", &day, "--to", &day])
        .ok()
        .stdout;
    assert!(table.contains(&id) && table.contains("total"), "{table}");
}

async fn forget_erases_registrations_but_keeps_the_counts(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let cli = cli.with("HARBORLIST__TRAININGS__CAPACITY", "1");
    let past = past_session();
    walk_ins(&cli, &past.id, &[("gone@example.org", Some("YouthLink"))]);
    cli.reg(&["attended", "--training", &past.id, "gone@example.org"])
        .ok();
    let next = next_session().id;
    cli.reg(&["add", "--training", &next, "holder@example.org"])
        .ok();
    cli.reg(&[
        "add",
        "--training",
        &next,
        "gone@example.org",
        "--name",
        "Gone Person",
    ])
    .ok();

    let out = cli.run(&["subscribers", "forget", "gone@example.org"]).ok();
    assert!(
        out.stdout.contains("2 training registration(s)"),
        "{}",
        out.stdout
    );

    let rows = sqlx::query(
        "SELECT status, subscriber_id, name, organisation, org_key, nonce, link_hash,
                request_ip, request_user_agent, confirm_ip, confirm_user_agent
         FROM registrations WHERE subscriber_id IS NULL ORDER BY id",
    )
    .fetch_all(store.pool())
    .await
    .expect("rows");
    assert_eq!(rows.len(), 2);
    for r in &rows {
        for column in [
            "name",
            "organisation",
            "nonce",
            "link_hash",
            "request_ip",
            "request_user_agent",
            "confirm_ip",
            "confirm_user_agent",
        ] {
            assert!(
                r.try_get::<Option<String>, _>(column)
                    .expect(column)
                    .is_none(),
                "{column} kept"
            );
        }
    }
    let statuses: Vec<String> = rows.iter().map(|r| r.try_get("status").unwrap()).collect();
    // The attendance stays; the place on the waiting list is given up.
    assert_eq!(statuses, ["attended", "cancelled"]);
    assert_eq!(
        rows[0]
            .try_get::<Option<String>, _>("org_key")
            .unwrap()
            .as_deref(),
        Some("youthlink")
    );
    let links: i64 = sqlx::query("SELECT COUNT(*) AS n FROM registration_links")
        .fetch_one(store.pool())
        .await
        .expect("count")
        .try_get("n")
        .expect("n");
    assert_eq!(links, 0);

    let day = past.start.date_naive().to_string();
    let report = cli
        .reg(&["report", "--from", &day, "--to", &day, "--json"])
        .ok()
        .json();
    assert_eq!(report["trainings"][0]["attended"], 1, "{report:#}");
    assert_eq!(report["trainings"][0]["organisations"], 1);
    let list = cli
        .reg(&["list", "--training", &past.id, "--json"])
        .ok()
        .json();
    assert!(
        list[0]["email"].is_null() && list[0]["name"].is_null(),
        "{list:#}"
    );
    let table = cli.reg(&["list", "--training", &past.id]).ok().stdout;
    assert!(
        table.contains("(forgotten)") && !table.contains("gone@"),
        "{table}"
    );
    // The seat-holder of the next training is untouched, and the planner-side refill of
    // the waiting list finds no forgotten row in it.
    let rows = cli
        .reg(&["list", "--training", &next, "--json"])
        .ok()
        .json();
    assert_eq!(status_of(&rows, "holder@example.org"), "registered");
}

async fn registrants_who_never_joined_are_not_list_members(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let key = TokenKey::parse(&cli.key).expect("key");
    seed(&store, &key, "member@example.org", "active").await;
    seed(&store, &key, "asked@example.org", "pending").await;
    let id = next_session().id;
    cli.reg(&[
        "add",
        "--training",
        &id,
        "member@example.org",
        "--organisation",
        "YouthLink",
    ])
    .ok();
    cli.reg(&["add", "--training", &id, "outsider@example.org"])
        .ok();

    let list = cli.run(&["subscribers", "list", "--json"]).ok().json();
    let emails: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["member@example.org", "asked@example.org"]);

    // A registration without a name shows the member's name on the list.
    sqlx::query("UPDATE subscribers SET name = 'Mem Ber' WHERE email_key = 'member@example.org'")
        .execute(store.pool())
        .await
        .expect("name");
    let regs = cli.reg(&["list", "--training", &id, "--json"]).ok().json();
    let member = regs
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == "member@example.org")
        .expect("member");
    assert_eq!(member["name"], "Mem Ber");

    let export = cli
        .run(&["subscribers", "export", "--format", "json"])
        .ok()
        .json();
    let rows = export.as_array().unwrap();
    assert_eq!(rows.len(), 2, "{export:#}");
    let member = &rows[0];
    assert_eq!(member["registrations"][0]["training"], id.as_str());
    assert_eq!(member["registrations"][0]["status"], "registered");
    assert_eq!(member["registrations"][0]["organisation"], "YouthLink");
    assert_eq!(rows[1]["registrations"], Value::Array(vec![]));
    let csv_text = cli.run(&["subscribers", "export"]).ok().stdout;
    assert!(
        csv_text.contains(&format!("{id} registered")) && !csv_text.contains("outsider@"),
        "{csv_text}"
    );

    let status = cli.run(&["status", "--json"]).ok().json();
    assert_eq!(status["subscribers"]["pending"], 1, "{status:#}");
    assert_eq!(status["registrants_not_on_list"], 1);
    // Still on the registration list for staff.
    let regs = cli.reg(&["list", "--training", &id, "--json"]).ok().json();
    assert_eq!(status_of(&regs, "outsider@example.org"), "registered");

    // Importing an old list that has them makes them members, as a new address would be.
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("old.csv");
    std::fs::write(
        &file,
        "email,name\noutsider@example.org,Out Sider\nmember@example.org,Mem\n",
    )
    .expect("write");
    let out = cli.run(&["subscribers", "import", path(&file)]).ok();
    assert!(
        out.stdout.contains("imported 1, already on the list 1"),
        "{}",
        out.stdout
    );
    let list = cli.run(&["subscribers", "list", "--json"]).ok().json();
    let outsider = list
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == "outsider@example.org")
        .expect("now on the list");
    assert_eq!(
        (&outsider["status"], &outsider["name"], &outsider["source"]),
        (
            &Value::from("active"),
            &Value::from("Out Sider"),
            &Value::from("import")
        )
    );
}

async fn status_shows_seats_and_attendance(backend: Backend) {
    let (_db, _store, cli) = setup(backend).await;
    let cli = cli.with("HARBORLIST__TRAININGS__CAPACITY", "2");
    let id = next_session().id;
    for e in ["s1@example.org", "s2@example.org", "s3@example.org"] {
        cli.reg(&["add", "--training", &id, e]).ok();
    }
    let past = past_session();
    walk_ins(
        &cli,
        &past.id,
        &[("p1@example.org", None), ("p2@example.org", None)],
    );
    cli.reg(&["attended", "--training", &past.id, "p1@example.org"])
        .ok();

    let text = cli.run(&["status"]).ok().stdout;
    assert!(
        text.contains(&format!(
            "[{id}]: 2 / 2 registered, 1 waitlisted, 0 offer(s) open (full)"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("[{}]: 1 of 2 registered attended", past.id)),
        "{text}"
    );
    let doc = cli.run(&["status", "--json"]).ok().json();
    let first = &doc["trainings"][0];
    assert_eq!(
        (
            &first["registered"],
            &first["waitlisted"],
            &first["offered"],
            &first["capacity"]
        ),
        (
            &Value::from(2),
            &Value::from(1),
            &Value::from(0),
            &Value::from(2)
        ),
        "{doc:#}"
    );
    let recent = doc["recent_trainings"].as_array().expect("recent");
    let last = recent
        .iter()
        .find(|t| t["id"] == past.id.as_str())
        .expect("past");
    assert_eq!(
        (&last["attended"], &last["registered"]),
        (&Value::from(1), &Value::from(2))
    );
}

async fn check_warns_when_capacity_is_below_the_seats_held(backend: Backend) {
    let (_db, _store, cli) = setup(backend).await;
    let id = next_session().id;
    for e in ["c1@example.org", "c2@example.org", "c3@example.org"] {
        cli.reg(&["add", "--training", &id, e]).ok();
    }
    let out = cli.run(&["check"]).ok();
    assert!(!out.stdout.contains("warn"), "{}", out.stdout);
    let lowered = cli.with("HARBORLIST__TRAININGS__CAPACITY", "2");
    let out = lowered.run(&["check"]).ok();
    assert!(
        out.stdout.contains(&format!("warn training {id}"))
            && out.stdout.contains("capacity 2 is below the 3")
            && out.stdout.contains("trainings.capacity")
            && out.stdout.contains("all good"),
        "{}",
        out.stdout
    );
    // Everyone stays registered.
    let rows = lowered
        .reg(&["list", "--training", &id, "--json"])
        .ok()
        .json();
    assert!(
        rows.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "registered")
    );
}

async fn key_rotation_keeps_registration_links_working(backend: Backend) {
    let (_db, store, cli) = setup(backend).await;
    let id = next_session().id;
    cli.reg(&["add", "--training", &id, "linked@example.org"])
        .ok();
    let old_key = TokenKey::parse(&cli.key).expect("key");
    let (nonce, old_hash): (String, String) = {
        let r = sqlx::query("SELECT nonce, link_hash FROM registrations")
            .fetch_one(store.pool())
            .await
            .expect("row");
        (r.try_get("nonce").unwrap(), r.try_get("link_hash").unwrap())
    };
    assert_eq!(
        old_key.derive(TokenPurpose::Registration, &nonce).hash(),
        old_hash
    );

    let new_text = TokenKey::generate_text();
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("rotated.toml");
    std::fs::write(
        &config,
        format!(
            "[security]\ntoken_key = \"{new_text}\"\nprevious_token_keys = [{{ key = \"{}\" }}]\n",
            cli.key
        ),
    )
    .expect("config");
    let rotated = Cli {
        db_url: cli.db_url.clone(),
        key: new_text.clone(),
        env: Vec::new(),
    };
    // Adding people carries out a pending rotation first, as `subscribers import` does.
    rotated
        .run(&[
            "--config",
            path(&config),
            "registrations",
            "add",
            "--training",
            &id,
            "after@example.org",
        ])
        .ok();
    let new_key = TokenKey::parse(&new_text).expect("key");
    let new_hash = new_key.derive(TokenPurpose::Registration, &nonce).hash();
    let found_new = store
        .registration_by_link(&new_hash)
        .await
        .expect("by link");
    let found_old = store
        .registration_by_link(&old_hash)
        .await
        .expect("by link");
    assert!(found_new.is_some(), "the new key's link works");
    assert_eq!(
        found_new.map(|r| r.id),
        found_old.map(|r| r.id),
        "the old link still finds the same registration"
    );
}

fn path(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn registrations_help_teaches_staff() {
    let out = crate::cli::harborlist()
        .args(["registrations", "--help"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for word in ["list", "add", "cancel", "attended", "report", "2027-01-20"] {
        assert!(text.contains(word), "{word} missing:\n{text}");
    }
    for (sub, words) in [
        (
            "list",
            &[
                "sign-in sheet",
                "waitlisted",
                "offered",
                "readable by you only",
            ][..],
        ),
        (
            "add",
            &["--over-capacity", "waiting list", "harborlist serve"][..],
        ),
        ("cancel", &["next person on the waiting list"][..]),
        ("attended", &["--file", "\"attended\" column"][..]),
        (
            "report",
            &["--from", "no_shows", "organisations", "forgotten"][..],
        ),
    ] {
        let out = crate::cli::harborlist()
            .args(["registrations", sub, "--help"])
            .output()
            .unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        for word in words {
            assert!(text.contains(word), "{sub} --help lacks {word}:\n{text}");
        }
    }
}
