//! The daemon as a supervisor (issue 15, items 7 and 9): a task that ends stops the
//! whole service with an error; `/healthz` says when the service can't do its work; HTTP
//! connections are bounded in time, and so is a graceful stop.

use std::{sync::Arc, time::Duration};

use harborlist::{
    clock::SystemClock,
    startup::{Application, StartupError},
    store::Backend as StoreBackend,
    web::server::{self, Limits},
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{Backend, MailSink, TestDb, eventually, spawn_app, test_settings};

crate::both_backends!(
    a_task_that_panics_stops_the_daemon_with_an_error,
    healthz_names_the_relay_and_fails_while_the_planner_is_stuck,
    a_client_that_never_finishes_its_headers_is_disconnected,
    a_graceful_stop_does_not_wait_for_a_slow_client,
);

async fn a_task_that_panics_stops_the_daemon_with_an_error(backend: Backend) {
    let db = TestDb::new(backend).await;
    let sink = MailSink::start();
    let settings = test_settings(&db.url, sink.port);
    let mut app = Application::build(settings, Arc::new(SystemClock))
        .await
        .expect("app builds");
    let (go, wait) = tokio::sync::oneshot::channel::<()>();
    app.supervise("doomed task", async move {
        let _ = wait.await;
        panic!("boom");
    });
    let port = app.port();
    let never = CancellationToken::new();
    let running = tokio::spawn(app.run_until_stopped(never.clone()));
    let health = format!("http://127.0.0.1:{port}/healthz");
    eventually(20, "the daemon to answer", || async {
        let r = reqwest::get(&health).await.ok()?;
        (r.status() == 200).then_some(())
    })
    .await;
    go.send(()).expect("the task is waiting");
    let ended = tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .expect("the daemon stops by itself, without a signal")
        .expect("run_until_stopped does not panic");
    match ended {
        Err(StartupError::TaskStopped { task, why }) => {
            assert_eq!(task, "doomed task");
            assert!(why.contains("boom"), "{why}");
        }
        other => panic!("expected TaskStopped, got {other:?}"),
    }
    assert!(
        TcpStream::connect(("127.0.0.1", port)).await.is_err(),
        "the HTTP server stopped with it"
    );
    // It stopped on its own, not because the token fired.
    assert!(!never.is_cancelled());
}

/// Holds the database's write lock from outside, as a long migration or a stuck admin
/// session would: the planner can't finish a turn, while the database still answers.
async fn hold_write_lock(
    store: &harborlist::store::Store,
) -> sqlx::Transaction<'static, sqlx::Any> {
    let mut tx = store.begin().await.expect("begin");
    let lock = match store.backend() {
        StoreBackend::Sqlite => "UPDATE mailings SET updated_at = updated_at WHERE 1 = 0",
        StoreBackend::Postgres => "LOCK TABLE mailings IN EXCLUSIVE MODE",
    };
    sqlx::query(lock).execute(&mut *tx).await.expect("lock");
    tx
}

async fn healthz_names_the_relay_and_fails_while_the_planner_is_stuck(backend: Backend) {
    let app = spawn_app(backend).await;
    let health = app.url("/healthz");
    let body = eventually(20, "a healthy answer", || async {
        let r = app.get(&health).await;
        let ok = r.status() == 200;
        let body = r.text().await.ok()?;
        ok.then_some(body)
    })
    .await;
    assert_eq!(body, "ok\nrelay: ok\n");

    let lock = hold_write_lock(&app.store).await;
    // tick is 1 s in tests: three ticks without a finished turn is a stuck planner.
    let stuck = eventually(20, "/healthz to notice the stuck planner", || async {
        let r = app.get(&health).await;
        let status = r.status();
        let body = r.text().await.ok()?;
        (status == 503).then_some(body)
    })
    .await;
    assert!(
        stuck.starts_with("the planner has not finished a turn in "),
        "{stuck}"
    );
    assert!(stuck.ends_with("\nrelay: ok\n"), "{stuck}");
    lock.rollback().await.expect("rollback");
    eventually(30, "/healthz to recover once the planner turns", || async {
        (app.get(&health).await.status() == 200).then_some(())
    })
    .await;
}

/// Reads until the server closes the connection; returns what it sent.
async fn read_to_close(stream: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    match read {
        Ok(Ok(_)) => got,
        // A reset is a close too.
        Ok(Err(_)) => got,
        Err(_) => panic!("the server kept the connection open for {within:?}"),
    }
}

async fn a_client_that_never_finishes_its_headers_is_disconnected(backend: Backend) {
    let app = crate::helpers::app(backend)
        .with(|s| s.server.header_timeout = "1s".parse().expect("duration"))
        .spawn()
        .await;
    let mut silent = Vec::new();
    for _ in 0..40 {
        silent.push(
            TcpStream::connect(("127.0.0.1", app.port))
                .await
                .expect("connect"),
        );
    }
    let mut slow = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .await
        .expect("write");
    // Meanwhile the service answers others.
    assert_eq!(app.get(&app.url("/healthz")).await.status(), 200);
    let answer = read_to_close(&mut slow, Duration::from_secs(10)).await;
    assert!(
        !answer.starts_with(b"HTTP/1.1 200"),
        "the half-sent request was not served"
    );
    for mut s in silent {
        read_to_close(&mut s, Duration::from_secs(10)).await;
    }
}

async fn a_graceful_stop_does_not_wait_for_a_slow_client(backend: Backend) {
    let mut app = crate::helpers::app(backend)
        .with(|s| s.server.shutdown_timeout = "1s".parse().expect("duration"))
        .spawn()
        .await;
    // A form post whose body never arrives holds its request open.
    let mut slow = TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    slow.write_all(
        b"POST /subscribe HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 100\r\n\r\nemail=",
    )
    .await
    .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = std::time::Instant::now();
    app.stop().await;
    // The request itself could take 30 s; the stop waits only server.shutdown_timeout.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "stop took {:?}",
        started.elapsed()
    );
    read_to_close(&mut slow, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let app = axum::Router::new().route("/", axum::routing::get(|| async { "hi" }));
    let limits = Limits {
        header_timeout: Duration::from_secs(5),
        idle_timeout: Duration::from_millis(300),
        shutdown_timeout: Duration::from_secs(1),
    };
    let stop = CancellationToken::new();
    let bare: server::BareHeaders = Vec::new().into();
    let serving = tokio::spawn(server::serve(listener, app, limits, bare, stop.clone()));
    let mut conn = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect");
    conn.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    conn.read_exact(&mut first).await.expect("a response");
    assert_eq!(&first, b"HTTP/1.1 200");
    // Kept alive after the response, then closed for being idle.
    read_to_close(&mut conn, Duration::from_secs(10)).await;
    stop.cancel();
    serving.await.expect("server task").expect("server");
}

/// PostgreSQL only: a SQLite file can't become unreachable under an open connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_fails_while_the_database_refuses_connections() {
    let app = spawn_app(Backend::Postgres).await;
    let health = app.url("/healthz");
    assert_eq!(app.get(&health).await.status(), 200);
    let name = app.db.url.rsplit('/').next().expect("db name").to_owned();
    let admin = std::env::var("HARBORLIST_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| crate::helpers::DEFAULT_PG.to_owned());
    let admin = sqlx::AnyPool::connect(&admin).await.expect("admin");
    let cut = format!(
        "ALTER DATABASE {name} ALLOW_CONNECTIONS false; \
         SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'"
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(cut))
        .execute(&admin)
        .await
        .expect("cut the database off");
    let body = eventually(30, "/healthz to report the database", || async {
        let r = app.get(&health).await;
        let status = r.status();
        let body = r.text().await.ok()?;
        (status == 503).then_some(body)
    })
    .await;
    assert!(body.starts_with("database unreachable\n"), "{body}");
    let heal = format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true");
    sqlx::raw_sql(sqlx::AssertSqlSafe(heal))
        .execute(&admin)
        .await
        .expect("let it back");
    eventually(30, "/healthz to recover", || async {
        (app.get(&health).await.status() == 200).then_some(())
    })
    .await;
}
