//! `spawn_app`: the real application, in-process, on a random port.

use std::{net::TcpListener, sync::Arc, time::Duration};

use harborlist::{
    clock::{Clock, SharedClock, SystemClock},
    config::{Settings, TransportKind},
    domain::TokenKey,
    startup::Application,
    store::Store,
};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::{Backend, MailSink, TestDb};

pub struct TestApp {
    pub address: String,
    pub port: u16,
    /// The private `/metrics` URL (`server.metrics_bind`), if metrics are on.
    pub metrics_url: Option<String>,
    /// The port `bounces.listen` is served on, if it is set (`127.0.0.1:0` in tests).
    pub bounce_port: Option<u16>,
    pub settings: Settings,
    pub store: Store,
    pub sink: MailSink,
    pub http: reqwest::Client,
    pub db: Arc<TestDb>,
    pub clock: SharedClock,
    /// The app's health: tests wait on its planner turns instead of sleeping.
    pub health: harborlist::health::Health,
    /// The running configuration, which [`TestApp::reload_with`] swaps as a reload does.
    live: harborlist::runtime::Live,
    shutdown: CancellationToken,
    task: Option<JoinHandle<()>>,
}

/// Settings from the committed defaults, pointed at `db` and `smtp_port`, with quick
/// retries and polling so tests run in seconds.
pub fn test_settings(db_url: &str, smtp_port: u16) -> Settings {
    let mut s = harborlist::config::load_from(std::path::Path::new("config"), None)
        .expect("default config loads");
    let port = free_port();
    s.server.bind = format!("127.0.0.1:{port}").parse().expect("addr");
    s.server.public_url = format!("http://127.0.0.1:{port}").parse().expect("url");
    // Many apps run at once in one test process: each gets its own metrics port.
    s.server.metrics_bind = "127.0.0.1:0".into();
    s.database.url = db_url.to_owned();
    s.mail.transport = TransportKind::Smtp;
    s.mail.smtp_url = Some(format!("smtp://127.0.0.1:{smtp_port}").into());
    s.mail.retry_base = "200ms".parse().expect("duration");
    s.mail.retry_max = "1s".parse().expect("duration");
    s.mail.smtp_timeout = "3s".parse().expect("duration");
    s.schedule.poll = "200ms".parse().expect("duration");
    s.schedule.tick = "1s".parse().expect("duration");
    s.security.token_key = Some(TokenKey::generate_text().into());
    s
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

type Tweak = Box<dyn FnOnce(&mut Settings) + Send>;

pub struct AppBuilder {
    backend: Backend,
    sink: Option<MailSink>,
    smtp_port: Option<u16>,
    clock: SharedClock,
    tweak: Vec<Tweak>,
}

impl AppBuilder {
    pub fn sink(mut self, sink: MailSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Point SMTP at a port where nothing listens (yet).
    pub fn smtp_port(mut self, port: u16) -> Self {
        self.smtp_port = Some(port);
        self
    }

    pub fn clock(mut self, clock: impl Clock + 'static) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    pub fn with(mut self, f: impl FnOnce(&mut Settings) + Send + 'static) -> Self {
        self.tweak.push(Box::new(f));
        self
    }

    pub async fn spawn(self) -> TestApp {
        let db = Arc::new(TestDb::new(self.backend).await);
        let sink = self.sink.unwrap_or_else(MailSink::start);
        let mut settings = test_settings(&db.url, self.smtp_port.unwrap_or(sink.port));
        for f in self.tweak {
            f(&mut settings);
        }
        TestApp::launch(settings, sink, db, self.clock).await
    }
}

pub fn app(backend: Backend) -> AppBuilder {
    AppBuilder {
        backend,
        sink: None,
        smtp_port: None,
        clock: Arc::new(SystemClock),
        tweak: Vec::new(),
    }
}

pub async fn spawn_app(backend: Backend) -> TestApp {
    app(backend).spawn().await
}

impl TestApp {
    async fn launch(
        settings: Settings,
        sink: MailSink,
        db: Arc<TestDb>,
        clock: SharedClock,
    ) -> Self {
        if std::env::var_os("RUST_LOG").is_some() {
            harborlist::telemetry::init(&settings.log);
        }
        let application = Application::build(settings.clone(), clock.clone())
            .await
            .expect("app builds");
        let port = application.port();
        let metrics_url = application
            .metrics_port()
            .map(|p| format!("http://127.0.0.1:{p}/metrics"));
        let bounce_port = application.bounce_listener_port();
        let store = application.store().clone();
        let health = application.health().clone();
        let live = application.live().clone();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let task = tokio::spawn(async move {
            application
                .run_until_stopped(token)
                .await
                .expect("app runs");
        });
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(20))
            .build()
            .expect("http client");
        Self {
            address: format!("http://127.0.0.1:{port}"),
            port,
            metrics_url,
            bounce_port,
            settings,
            store,
            sink,
            http,
            db,
            clock,
            health,
            live,
            shutdown,
            task: Some(task),
        }
    }

    /// Waits until the planner has finished two more turns: the second began after this
    /// call, so it planned with whatever the clock and settings say now.
    pub async fn planner_turns(&self) {
        let from = self.health.planner_turns();
        crate::helpers::eventually(30, "two planner turns", || async {
            (self.health.planner_turns() >= from + 2).then_some(())
        })
        .await;
    }

    /// Graceful stop, as on SIGTERM.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("app stops in time")
                .expect("app task");
        }
    }

    /// Stops, then starts again on the same database, sink and settings.
    pub async fn restart(mut self) -> Self {
        self.stop().await;
        Self::launch(
            self.settings.clone(),
            self.sink.clone(),
            self.db.clone(),
            self.clock.clone(),
        )
        .await
    }

    /// A live reload with changed settings, as SIGHUP does once the edited files are read
    /// (`tests/api/reload.rs` covers the reading): the new runtime is built, stamped and
    /// swapped in while the app runs, and the planner picks it up at its next turn.
    pub fn reload_with(&mut self, change: impl FnOnce(&mut Settings)) {
        let mut settings = self.settings.clone();
        change(&mut settings);
        let mut runtime =
            harborlist::runtime::Runtime::build(settings.clone()).expect("the edit loads");
        runtime.loaded_ms = Some(harborlist::clock::to_millis(self.clock.now()));
        self.live.replace(runtime);
        self.settings = settings;
    }

    /// Stops, then starts again on the same database and sink with changed settings.
    pub async fn restart_with(mut self, change: impl FnOnce(&mut Settings)) -> Self {
        self.stop().await;
        let mut settings = self.settings.clone();
        change(&mut settings);
        Self::launch(
            settings,
            self.sink.clone(),
            self.db.clone(),
            self.clock.clone(),
        )
        .await
    }

    /// Starts a second process-like instance on the same database and sink.
    pub async fn sibling(&self) -> Self {
        let mut settings = self.settings.clone();
        let port = free_port();
        settings.server.bind = format!("127.0.0.1:{port}").parse().expect("addr");
        Self::launch(
            settings,
            self.sink.clone(),
            self.db.clone(),
            self.clock.clone(),
        )
        .await
    }

    /// The token key the app runs with (`security.token_key`), for CLI commands on its
    /// database.
    pub fn token_key(&self) -> &str {
        self.settings
            .security
            .token_key
            .as_ref()
            .map(harborlist::domain::Secret::expose)
            .expect("test settings set a token key")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn subscribe(&self, email: &str, name: &str) -> reqwest::Response {
        self.http
            .post(self.url("/subscribe"))
            .form(&[("email", email), ("name", name)])
            .send()
            .await
            .expect("POST /subscribe")
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(url).send().await.expect("GET")
    }

    pub async fn post_empty(&self, url: &str) -> reqwest::Response {
        self.http
            .post(url)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("")
            .send()
            .await
            .expect("POST")
    }

    /// The status of an address, as `subscribers list` would show it.
    pub async fn status_of(&self, email: &str) -> Option<String> {
        self.store
            .list_subscribers()
            .await
            .expect("list")
            .into_iter()
            .find(|s| s.email.eq_ignore_ascii_case(email))
            .map(|s| s.status.as_str().to_owned())
    }

    /// Goes through the whole web flow for an address and returns once it is active (the
    /// welcome has arrived).
    pub async fn subscribe_and_confirm(&self, email: &str) {
        let before = self.sink.to(email).len();
        assert_eq!(self.subscribe(email, "").await.status(), 200);
        let confirm = super::eventually(20, "confirmation mail", || async {
            self.sink.to(email).get(before).cloned()
        })
        .await;
        let link = super::link_in(&confirm.bytes, "/confirm/");
        assert_eq!(self.post_empty(&link).await.status(), 200);
        super::eventually(20, "welcome mail", || async {
            (self.sink.to(email).len() > before + 1).then_some(())
        })
        .await;
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
