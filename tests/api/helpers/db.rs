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
