//! The typed sections of the configuration. Key names here are a public contract: the
//! README, `config/*.toml` and the black-box tests use them.

use std::{net::SocketAddr, path::PathBuf};

use serde::{Deserialize, Serialize};

use crate::{
    calendar::TrainingsSettings,
    domain::{HumanDuration, Secret},
};

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub server: ServerSettings,
    pub database: DatabaseSettings,
    pub mail: MailSettings,
    pub list: ListSettings,
    pub subscriptions: SubscriptionSettings,
    #[serde(default)]
    pub security: SecuritySettings,
    #[serde(default)]
    pub templates: TemplateSettings,
    #[serde(default)]
    pub schedule: ScheduleSettings,
    #[serde(default)]
    pub log: LogSettings,
    #[serde(default)]
    pub trainings: TrainingsSettings,
    #[serde(default)]
    pub registration: RegistrationSettings,
    /// `[bounces]`: reading DSNs and complaints back. Absent, nothing is read and the
    /// return path carries no VERP tag.
    #[serde(default)]
    pub bounces: Option<BounceSettings>,
    #[serde(default)]
    pub reminders: Vec<ReminderSettings>,
    #[serde(default)]
    pub announcements: Vec<super::AnnouncementSettings>,
    /// `announcements.max_late`. TOML can't hold a table and an array of tables under one
    /// name, so [`super::Sources::load`] takes it out of the files before they are merged
    /// (see `config/mod.rs`) and sets it here.
    #[serde(skip)]
    pub announcement_rules: AnnouncementRules,
}

/// Rules for all announcements, from the `[announcements]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnnouncementRules {
    /// An announcement whose `send_at` is further in the past than this when the planner
    /// would send it is skipped instead (unless its entry says `send_late = true`).
    pub max_late: HumanDuration,
}

impl Default for AnnouncementRules {
    fn default() -> Self {
        Self {
            max_late: HumanDuration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address and port the HTTP server listens on. Port 0 picks a free port.
    pub bind: SocketAddr,
    /// The address people reach us at; every link in mail starts with it.
    pub public_url: url::Url,
    /// Take the client address from `X-Forwarded-For` (only behind a reverse proxy you run).
    #[serde(default)]
    pub trust_forwarded_for: bool,
    /// Where `/metrics` is served: a private address only. Empty turns it off.
    #[serde(default = "default_metrics_bind")]
    pub metrics_bind: String,
    /// Other sites' origins that may post the subscribe form (an embedded form), e.g.
    /// `["https://www.example.org"]`.
    #[serde(default)]
    pub form_origins: Vec<String>,
    /// How long a client has to send a request's headers after connecting.
    #[serde(default = "default_header_timeout")]
    pub header_timeout: HumanDuration,
    /// How long a graceful stop waits for open requests before closing them.
    #[serde(default = "default_shutdown_timeout")]
    pub shutdown_timeout: HumanDuration,
}

impl ServerSettings {
    /// `server.metrics_bind` as an address, or `None` when it is empty (metrics off).
    pub fn metrics_addr(&self) -> Result<Option<SocketAddr>, String> {
        let text = self.metrics_bind.trim();
        if text.is_empty() {
            return Ok(None);
        }
        text.parse().map(Some).map_err(|_| {
            format!("{text:?} is not an address; use e.g. \"127.0.0.1:9464\", or \"\" to turn metrics off")
        })
    }
}

fn default_metrics_bind() -> String {
    "127.0.0.1:9464".into()
}

fn default_header_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

fn default_shutdown_timeout() -> HumanDuration {
    HumanDuration::from_secs(10)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    /// `sqlite://path/to/file.db` or `postgres://user@host/db`.
    pub url: String,
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

fn default_max_connections() -> u32 {
    8
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    Smtp,
    File,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MailSettings {
    pub transport: TransportKind,
    /// lettre's URL form: `smtp://host:port`, `smtps://user:pass@host:465`,
    /// `smtp://host:587?tls=required`.
    #[serde(default)]
    pub smtp_url: Option<Secret>,
    #[serde(default = "default_outbox")]
    pub outbox_dir: PathBuf,
    pub from: lettre::message::Mailbox,
    #[serde(default)]
    pub reply_to: Option<lettre::message::Mailbox>,
    /// Whether the relay carries SMTPUTF8 (RFC 6531), so that addresses with non-ASCII
    /// letters before the @ can be accepted. Off by default: most relays don't.
    #[serde(default)]
    pub smtputf8: bool,
    /// Messages per second across the whole instance; 0 means no limit.
    #[serde(default)]
    pub max_per_second: f64,
    /// SMTP connections kept open; also the most messages the relay may hold accepted
    /// before their outcome is stored, which bounds what a crash can repeat.
    #[serde(default = "default_pool_size")]
    pub pool_size: u32,
    /// Attempts before a transiently failing delivery is given up as failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// The first retry waits this long; each later one twice as long, up to `retry_max`.
    #[serde(default = "default_retry_base")]
    pub retry_base: HumanDuration,
    #[serde(default = "default_retry_max")]
    pub retry_max: HumanDuration,
    /// How long to wait for any one SMTP reply before treating the attempt as failed.
    #[serde(default = "default_smtp_timeout")]
    pub smtp_timeout: HumanDuration,
    /// A claimed delivery not recorded within this time goes back to the queue (its
    /// sender is presumed dead).
    #[serde(default = "default_lease")]
    pub lease: HumanDuration,
    #[serde(default)]
    pub dkim: Option<DkimSettings>,
    /// The envelope sender (where DSNs go). Defaults to `mail.from`'s address; with
    /// `bounces.verp` each message's is `local+TAG@domain` of it.
    #[serde(default)]
    pub return_path: Option<lettre::Address>,
}

impl MailSettings {
    /// `mail.return_path`, or `mail.from`'s address.
    pub fn return_path(&self) -> lettre::Address {
        self.return_path
            .clone()
            .unwrap_or_else(|| self.from.email.clone())
    }

    /// `mail.smtp_url` as text, password and all ("" when unset): only for parsing it and
    /// connecting. Anything shown to people goes through `mail::redact::redacted_url`.
    pub fn relay_url(&self) -> &str {
        self.smtp_url.as_ref().map_or("", Secret::expose)
    }
}

fn default_outbox() -> PathBuf {
    PathBuf::from("data/outbox")
}
fn default_pool_size() -> u32 {
    4
}
fn default_max_attempts() -> u32 {
    12
}
fn default_retry_base() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_retry_max() -> HumanDuration {
    HumanDuration::from_secs(3600)
}
fn default_smtp_timeout() -> HumanDuration {
    HumanDuration::from_secs(30)
}
fn default_lease() -> HumanDuration {
    HumanDuration::from_secs(300)
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DkimSettings {
    pub selector: String,
    pub domain: String,
    /// PEM file holding an RSA (PKCS#1) or Ed25519 private key.
    pub private_key_file: PathBuf,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListSettings {
    pub name: String,
    /// The List-Id (RFC 2919), e.g. `trainings.lists.example.org`. Message-IDs and calendar
    /// UIDs use it as their domain.
    pub id: String,
    pub organization: String,
    /// The sender's postal address, printed in every footer.
    pub postal_address: String,
    /// One sentence telling the reader why they get this mail.
    #[serde(default = "default_why")]
    pub why_you_get_this: String,
}

fn default_why() -> String {
    "You get this because you joined the list and confirmed your address.".into()
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionSettings {
    pub confirm_ttl: HumanDuration,
    /// Subscribe requests answered per address per 24 hours; the rest get 429.
    #[serde(default = "default_per_address")]
    pub max_confirmations_per_day: u32,
    /// Subscribe requests per client IP per hour.
    #[serde(default = "default_per_ip")]
    pub max_requests_per_ip_per_hour: u32,
    /// Send a "you have left the list" message after an unsubscribe.
    #[serde(default)]
    pub send_goodbye: bool,
}

fn default_per_address() -> u32 {
    3
}
fn default_per_ip() -> u32 {
    30
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SecuritySettings {
    /// Secret that link tokens are derived from (base64, ≥ 32 bytes). If unset, the key in
    /// `token_key_file` is used, and created on first start (a database that has no key
    /// fingerprint yet).
    #[serde(default)]
    pub token_key: Option<Secret>,
    #[serde(default)]
    pub token_key_file: Option<PathBuf>,
    /// Keys used before the current one, for a rotation: each `{ key = "…" }` (base64) or
    /// `{ file = "…" }` (a key file). See `crate::runtime::keys`.
    #[serde(default)]
    pub previous_token_keys: Vec<PreviousTokenKey>,
}

/// One entry of `security.previous_token_keys`: exactly one of `key` and `file`.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PreviousTokenKey {
    #[serde(default)]
    pub key: Option<Secret>,
    #[serde(default)]
    pub file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TemplateSettings {
    pub dir: PathBuf,
}

impl Default for TemplateSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("templates"),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScheduleSettings {
    /// How often the planner wakes even when nothing is known to be due.
    pub tick: HumanDuration,
    /// How often an idle sender looks for due deliveries.
    pub poll: HumanDuration,
    /// How far ahead the planner writes reminder rows.
    pub horizon: HumanDuration,
    /// How often `serve` looks for edits to the config files and templates (0s: never;
    /// SIGHUP still reloads).
    pub watch: HumanDuration,
}

impl Default for ScheduleSettings {
    fn default() -> Self {
        Self {
            tick: HumanDuration::from_secs(30),
            poll: HumanDuration::from_secs(2),
            horizon: HumanDuration::from_secs(400 * 86400),
            watch: HumanDuration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter such as `info` or `harborlist=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReminderSettings {
    /// Short, stable name; part of the key that makes each reminder go out once.
    pub name: String,
    /// How long before the training starts it goes out.
    pub before: HumanDuration,
    /// Template name under `templates/email/`.
    pub template: String,
    /// Who gets it.
    #[serde(default)]
    pub audience: Audience,
}

/// Who a reminder goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Audience {
    /// Every active subscriber.
    #[default]
    List,
    /// Everyone registered for the training, on the list or not.
    Registered,
    /// Active subscribers neither registered nor waitlisted, and only while seats are left.
    Unregistered,
}

impl Audience {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::List => "list",
            Self::Registered => "registered",
            Self::Unregistered => "unregistered",
        }
    }
}

/// `[registration]`: who takes registrations, and when they stop.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RegistrationSettings {
    pub mode: RegistrationMode,
    /// How long before the start registration and waiting-list offers stop.
    pub closes_before: HumanDuration,
    /// How long a waiting-list offer holds (never past the close).
    pub offer_ttl: HumanDuration,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Harborlist,
            closes_before: HumanDuration::from_secs(2 * 3600),
            offer_ttl: HumanDuration::from_secs(48 * 3600),
        }
    }
}

/// Where people register.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RegistrationMode {
    /// harborlist takes registrations, keeps the seat count and the waiting list.
    Harborlist,
    /// Somewhere else does (`trainings.registration_url`); harborlist only announces.
    External,
}

/// `[bounces]`: how reports from the receiving side come back and what they do.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BounceSettings {
    /// Each message's envelope sender is `local+TAG@domain` of `mail.return_path`, TAG
    /// naming the delivery under a MAC, so a report is matched to what was sent.
    pub verp: bool,
    /// An IMAP mailbox to read reports from: `imaps://user:pass@host/INBOX` or
    /// `imap://user:pass@host/INBOX?tls=required`.
    pub imap_url: Option<Secret>,
    /// How often the mailbox is looked at (IDLE wakes it sooner where the server offers it).
    pub poll: HumanDuration,
    /// Where a message is moved once its report is recorded.
    pub done_folder: String,
    /// Where a message that is not a report is moved. Nothing is ever deleted.
    pub unknown_folder: String,
    /// An SMTP listener for reports handed over by the site's own MTA, e.g. `127.0.0.1:2526`.
    pub listen: Option<SocketAddr>,
    /// The largest message the listener takes, in bytes.
    pub max_size: u64,
    /// What a soft bounce (4.x.x) adds to the score; a hard one adds 1.
    pub soft_weight: f64,
    /// The score that makes an address `bouncing`.
    pub threshold: u32,
    /// A score not raised for this long starts again from 0.
    pub stale_after: HumanDuration,
}

impl Default for BounceSettings {
    fn default() -> Self {
        Self {
            verp: true,
            imap_url: None,
            poll: HumanDuration::from_secs(60),
            done_folder: "harborlist/processed".into(),
            unknown_folder: "harborlist/unknown".into(),
            listen: None,
            max_size: 1024 * 1024,
            soft_weight: 0.5,
            threshold: 3,
            stale_after: HumanDuration::from_secs(30 * 86_400),
        }
    }
}

impl BounceSettings {
    /// `bounces.imap_url` as text, password and all: only for parsing and connecting.
    pub fn imap_url(&self) -> Option<&str> {
        self.imap_url.as_ref().map(Secret::expose)
    }
}

/// `bounces.imap_url`, parsed: where the return path's mailbox is and how to reach it.
#[derive(Debug, Clone)]
pub struct ImapUrl {
    pub host: String,
    pub port: u16,
    pub tls: ImapTls,
    /// The login, percent-decoded (`bounces%40example.org` is `bounces@example.org`).
    pub user: String,
    pub password: Secret,
    /// The folder reports arrive in; `INBOX` when the URL has no path.
    pub mailbox: String,
}

/// How the IMAP session is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImapTls {
    /// `imaps://` (port 993): TLS from the first byte.
    Implicit,
    /// `imap://…?tls=required` (port 143): STARTTLS, and the session ends if the server
    /// does not offer it.
    StartTls,
    /// `imap://` to this machine only (a local Dovecot): the password never leaves it.
    Loopback,
}

impl ImapUrl {
    pub fn parse(text: &str) -> Result<Self, String> {
        let url = url::Url::parse(text).map_err(|e| {
            format!(
                "is not a URL ({e}); write it as \"imaps://user:password@imap.example.org/INBOX\""
            )
        })?;
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or("has no host; write it as \"imaps://user:password@imap.example.org/INBOX\"")?
            .trim_matches(['[', ']'])
            .to_owned();
        let tls_required = url
            .query_pairs()
            .any(|(k, v)| k == "tls" && v == "required");
        let tls = match url.scheme() {
            "imaps" => ImapTls::Implicit,
            "imap" if tls_required => ImapTls::StartTls,
            "imap" if is_loopback(&host) => ImapTls::Loopback,
            "imap" => {
                return Err(format!(
                    "would send the password to {host} unencrypted; use imaps://{host}/… or add ?tls=required"
                ));
            }
            other => {
                return Err(format!(
                    "starts with {other}://; use imaps:// (or imap://…?tls=required)"
                ));
            }
        };
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        let user = decode(url.username());
        if user.is_empty() {
            return Err("has no user; write it as \"imaps://user:password@imap.example.org/INBOX\" (an @ in the user is %40)".into());
        }
        let password = Secret::from(decode(url.password().unwrap_or("")));
        let path = url.path().trim_start_matches('/');
        let mailbox = if path.is_empty() {
            "INBOX".to_owned()
        } else {
            decode(path)
        };
        let port = url.port().unwrap_or(match tls {
            ImapTls::Implicit => 993,
            _ => 143,
        });
        Ok(Self {
            host,
            port,
            tls,
            user,
            password,
            mailbox,
        })
    }
}

fn is_loopback(host: &str) -> bool {
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}
