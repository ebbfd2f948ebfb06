//! A fresh database per test: a temporary SQLite file, or a new PostgreSQL database.
//!
//! PostgreSQL tests use `HARBORLIST_TEST_POSTGRES_URL`, defaulting to the server every
//! machine of this project runs. If it cannot be reached the test fails; it never skips.

use sqlx::{AnyConnection, Connection};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub const DEFAULT_PG: &str = "postgres://postgres@127.0.0.1:5432/test";

pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(backend: Backend) -> Self {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}/test.db", dir.path().display());
                Self {
                    url,
                    _dir: Some(dir),
                }
            }
            Backend::Postgres => {
                sqlx::any::install_default_drivers();
                let admin = std::env::var("HARBORLIST_TEST_POSTGRES_URL")
                    .unwrap_or_else(|_| DEFAULT_PG.to_owned());
                let mut conn = AnyConnection::connect(&admin).await.unwrap_or_else(|e| {
                    panic!("PostgreSQL test database unreachable at {admin}: {e} (start it, or set HARBORLIST_TEST_POSTGRES_URL)")
                });
                let name = format!("harborlist_t_{}", harborlist::domain::new_nonce());
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await
                    .expect("create test database");
                let _ = conn.close().await;
                let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
                Self {
                    url: format!("{base}/{name}"),
                    _dir: None,
                }
            }
        }
    }
}

/// Puts a subscriber straight into the database with the given status, as an import
/// would, with an unsubscribe link derived from `key`.
pub async fn seed(
    store: &harborlist::store::Store,
    key: &harborlist::domain::TokenKey,
    email: &str,
    status: &str,
) {
    use harborlist::{
        domain::{TokenPurpose, new_nonce},
        store::subscriptions::{ImportOutcome, ImportRow},
    };
    let nonce = new_nonce();
    let hash = key.derive(TokenPurpose::Unsubscribe, &nonce).hash();
    let key_text = email.to_lowercase();
    let row = ImportRow {
        email,
        email_key: &key_text,
        name: None,
        unsub_nonce: &nonce,
        unsub_hash: &hash,
        now_ms: 0,
    };
    assert_eq!(
        store.import_subscriber(&row).await.expect("import"),
        ImportOutcome::Added
    );
    if status != "active" {
        sqlx::query("UPDATE subscribers SET status = $1 WHERE email_key = $2")
            .bind(status)
            .bind(&key_text)
            .execute(store.pool())
            .await
            .expect("set status");
    }
}
