//! Configuration: three layers in, one validated [`Settings`] out.
//!
//! Layers, later ones winning:
//! 1. `config/default.toml` (committed; runs as-is on a fresh machine),
//! 2. the file named by `--config` or `HARBORLIST_CONFIG`,
//! 3. environment variables `HARBORLIST__SECTION__KEY` (`__` separates levels, because key
//!    names themselves contain `_`).
//!
//! The `config` crate merges them and serde deserializes into typed sections whose field
//! types parse on the way in (durations, addresses, URLs), so a bad value is reported with
//! its key. [`Settings::validate`] then checks what spans several keys. Nothing else in the
//! program reads raw configuration.

mod announcements;
pub mod entries;
pub mod limits;
mod sections;

use std::path::{Path, PathBuf};

pub use announcements::*;
pub use sections::*;

use crate::calendar::{Calendar, TrainingsSettings};

/// Why configuration was refused. Always names the key (or file) and the problem.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0}")]
    Load(String),
    #[error("{key}: {problem}")]
    Invalid { key: String, problem: String },
}

impl ConfigError {
    pub fn invalid(key: impl Into<String>, problem: impl std::fmt::Display) -> Self {
        Self::Invalid {
            key: key.into(),
            problem: problem.to_string(),
        }
    }
}

/// Where settings came from, for `reload` and for messages that name the file.
#[derive(Debug, Clone)]
pub struct Sources {
    pub default_file: PathBuf,
    pub extra_file: Option<PathBuf>,
}

impl Sources {
    /// `config/default.toml` next to the working directory, plus the optional file.
    pub fn new(extra_file: Option<PathBuf>) -> Self {
        Self {
            default_file: PathBuf::from("config/default.toml"),
            extra_file,
        }
    }

    /// `announcements.toml` next to the defaults: layered in when it exists, so staff can
    /// keep announcements in a file of their own.
    pub fn announcements_file(&self) -> PathBuf {
        self.default_file.with_file_name("announcements.toml")
    }

    pub fn files(&self) -> Vec<PathBuf> {
        let mut files = vec![self.default_file.clone()];
        let announcements = self.announcements_file();
        if announcements.exists() {
            files.push(announcements);
        }
        files.extend(self.extra_file.clone());
        files
    }

    /// The settings, validated. An error about an `[[announcements]]` entry names it by
    /// id, place and file ([`entries`]).
    pub fn load(&self) -> Result<Settings, ConfigError> {
        let settings = self
            .merge()
            .map_err(|e| entries::name_entries(e, self, None))?;
        settings
            .validate()
            .map_err(|e| entries::name_entries(e, self, Some(&settings.announcements)))?;
        Ok(settings)
    }

    /// The layers merged and deserialized, not yet validated.
    fn merge(&self) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        let mut max_late = None;
        // The committed defaults are required only if they exist: a packaged install may ship
        // one complete file instead, named with --config.
        let required = self.extra_file.is_none();
        builder = add_file(builder, &self.default_file, required, &mut max_late)?;
        builder = add_file(builder, &self.announcements_file(), false, &mut max_late)?;
        if let Some(extra) = &self.extra_file {
            if !extra.exists() {
                return Err(ConfigError::Load(format!(
                    "{}: no such configuration file",
                    extra.display()
                )));
            }
            builder = add_file(builder, extra, true, &mut max_late)?;
        }
        let mut env: config::Map<String, String> = std::env::vars().collect();
        if let Some(value) = env.remove(MAX_LATE_ENV) {
            max_late = Some(value);
        }
        builder = builder.add_source(
            config::Environment::with_prefix("HARBORLIST")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true)
                .source(Some(env)),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let mut settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        if let Some(text) = max_late {
            settings.announcement_rules.max_late = text
                .parse()
                .map_err(|e| ConfigError::invalid("announcements.max_late", e))?;
        }
        Ok(settings)
    }

    /// The file among [`Sources::files`] that defines the announcement `id`: the last one
    /// with an `[[announcements]]` entry of that id (later files replace earlier lists).
    pub fn file_of_announcement(&self, id: &str) -> Option<PathBuf> {
        self.files().into_iter().rev().find(|file| {
            let Ok(text) = std::fs::read_to_string(file) else {
                return false;
            };
            let Ok(doc) = text.parse::<toml::Table>() else {
                return false;
            };
            doc.get("announcements")
                .and_then(toml::Value::as_array)
                .is_some_and(|entries| {
                    entries
                        .iter()
                        .any(|e| e.get("id").and_then(toml::Value::as_str) == Some(id))
                })
        })
    }
}

/// `HARBORLIST__ANNOUNCEMENTS__MAX_LATE`, read apart from the other variables for the same
/// reason as the `[announcements]` table below.
const MAX_LATE_ENV: &str = "HARBORLIST__ANNOUNCEMENTS__MAX_LATE";

type Builder = config::ConfigBuilder<config::builder::DefaultState>;

/// Adds one TOML file. `[[announcements]]` is an array of tables, so `announcements.max_late`
/// can only be written as an `[announcements]` table in a file without entries (TOML allows
/// only one of the two per file), and merged as it is, one would replace the other. So a
/// file holding that table is read here: its `max_late` is kept aside (the last file wins)
/// and the rest goes to the merge. Other files go in untouched, so their errors name them.
fn add_file(
    builder: Builder,
    path: &Path,
    required: bool,
    max_late: &mut Option<String>,
) -> Result<Builder, ConfigError> {
    let untouched = |b: Builder| {
        b.add_source(
            config::File::from(path)
                .format(config::FileFormat::Toml)
                .required(required),
        )
    };
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(untouched(builder));
    };
    let Ok(mut doc) = text.parse::<toml::Table>() else {
        return Ok(untouched(builder));
    };
    let Some(toml::Value::Table(rules)) = doc.remove("announcements") else {
        return Ok(untouched(builder));
    };
    let at = |key: &str| format!("{} ({})", key, path.display());
    for (key, value) in rules {
        match (key.as_str(), value) {
            ("max_late", toml::Value::String(v)) => *max_late = Some(v),
            ("max_late", _) => {
                return Err(ConfigError::invalid(
                    at("announcements.max_late"),
                    "write it as a duration in quotes, like \"1h\"",
                ));
            }
            (other, _) => {
                return Err(ConfigError::invalid(
                    at(&format!("announcements.{other}")),
                    "unknown key; [announcements] holds only max_late, and each announcement is an [[announcements]] entry",
                ));
            }
        }
    }
    let rest =
        toml::to_string(&doc).map_err(|e| ConfigError::Load(format!("{}: {e}", path.display())))?;
    Ok(builder.add_source(config::File::from_str(&rest, config::FileFormat::Toml)))
}

impl Settings {
    /// Checks that span keys, or need more than a type to check. Field types already
    /// refused anything unparseable; [`limits`] holds the range of every duration and count.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
        self.validate_listeners()?;
        self.validate_mail()?;
        limits::check(self)?;
        self.validate_list()?;
        self.validate_reminders()?;
        self.validate_bounces()?;
        self.validate_announcements()
    }

    /// `[bounces]`: a way in, and folders that are names.
    fn validate_bounces(&self) -> Result<(), ConfigError> {
        let Some(b) = &self.bounces else {
            return Ok(());
        };
        if b.imap_url.is_none() && b.listen.is_none() {
            return Err(ConfigError::invalid(
                "bounces",
                "has no way in: set bounces.imap_url (the return path's mailbox) or bounces.listen (an SMTP listener for your MTA), or remove [bounces]",
            ));
        }
        if let Some(url) = b.imap_url() {
            crate::config::ImapUrl::parse(url)
                .map_err(|e| ConfigError::invalid("bounces.imap_url", e))?;
        }
        for (key, folder) in [
            ("bounces.done_folder", &b.done_folder),
            ("bounces.unknown_folder", &b.unknown_folder),
        ] {
            if folder.trim().is_empty() {
                return Err(ConfigError::invalid(
                    key,
                    "is empty; name a folder, e.g. \"harborlist/processed\"",
                ));
            }
            one_line(key, folder)?;
        }
        Ok(())
    }

    /// The listeners: the metrics address, and the origins allowed to post forms.
    fn validate_listeners(&self) -> Result<(), ConfigError> {
        self.server
            .metrics_addr()
            .map_err(|e| ConfigError::invalid("server.metrics_bind", e))?;
        for origin in &self.server.form_origins {
            let ok = url::Url::parse(origin).is_ok_and(|u| {
                matches!(u.scheme(), "http" | "https")
                    && u.origin().ascii_serialization() == origin.trim_end_matches('/')
            });
            if !ok {
                return Err(ConfigError::invalid(
                    "server.form_origins",
                    format!(
                        "{origin:?} is not an origin; write it as \"https://www.example.org\" (scheme and host, no path)"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn validate_server(&self) -> Result<(), ConfigError> {
        if self.server.public_url.cannot_be_a_base() {
            return Err(ConfigError::invalid(
                "server.public_url",
                "must be an http(s) URL",
            ));
        }
        if !matches!(self.server.public_url.scheme(), "http" | "https") {
            return Err(ConfigError::invalid(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        if self.database.url.trim().is_empty() {
            return Err(ConfigError::invalid("database.url", "is empty"));
        }
        crate::store::Backend::from_url(&self.database.url)
            .map_err(|e| ConfigError::invalid("database.url", e))?;
        Ok(())
    }

    fn validate_mail(&self) -> Result<(), ConfigError> {
        if self.mail.transport == TransportKind::Smtp {
            let url = self.mail.relay_url();
            if url.is_empty() {
                return Err(ConfigError::invalid(
                    "mail.smtp_url",
                    "is required when mail.transport = \"smtp\" (e.g. \"smtp://127.0.0.1:25\")",
                ));
            }
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
                .map_err(|e| ConfigError::invalid("mail.smtp_url", e))?;
        }
        if !self.mail.max_per_second.is_finite() {
            return Err(ConfigError::invalid(
                "mail.max_per_second",
                "must be 0 (no limit) or a positive number",
            ));
        }
        if let Some(dkim) = &self.mail.dkim {
            one_line("mail.dkim.selector", &dkim.selector)?;
            one_line("mail.dkim.domain", &dkim.domain)?;
        }
        Ok(())
    }

    fn validate_list(&self) -> Result<(), ConfigError> {
        // These go into headers (List-Id, the calendar's PRODID) or subjects.
        one_line("list.name", &self.list.name)?;
        one_line("list.id", &self.list.id)?;
        one_line("list.organization", &self.list.organization)?;
        if self.list.id.contains(['<', '>', ' ', '@']) || !self.list.id.contains('.') {
            return Err(ConfigError::invalid(
                "list.id",
                "must be a dotted name like \"trainings.lists.example.org\" (no <, >, @ or spaces)",
            ));
        }
        if self.list.postal_address.trim().is_empty() {
            return Err(ConfigError::invalid(
                "list.postal_address",
                "is required: bulk mail must carry the sender's postal address (CAN-SPAM)",
            ));
        }
        Ok(())
    }

    fn validate_reminders(&self) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (i, r) in self.reminders.iter().enumerate() {
            if !names.insert(r.name.as_str()) {
                return Err(ConfigError::invalid(
                    format!("reminders[{i}].name"),
                    format!("{:?} is used twice", r.name),
                ));
            }
            if r.name.is_empty()
                || !r
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(ConfigError::invalid(
                    format!("reminders[{i}].name"),
                    "use letters, digits, - and _ only",
                ));
            }
        }
        Ok(())
    }

    fn validate_announcements(&self) -> Result<(), ConfigError> {
        let calendar = self.calendar()?;
        let mut ids = std::collections::HashSet::new();
        for (i, a) in self.announcements.iter().enumerate() {
            if let Some((field, problem)) = a.problems(calendar.timezone()).into_iter().next() {
                return Err(ConfigError::invalid(
                    format!("announcements[{i}].{field}"),
                    problem,
                ));
            }
            if !ids.insert(a.id.as_str()) {
                return Err(ConfigError::invalid(
                    format!("announcements[{i}].id"),
                    format!("{:?} is used twice", a.id),
                ));
            }
            if let Some(training) = &a.training
                && a.session(&calendar).is_none()
            {
                return Err(ConfigError::invalid(
                    format!("announcements[{i}].training"),
                    format!(
                        "{training:?} is not a training's id or date (see the ids in `harborlist trainings`)"
                    ),
                ));
            }
        }
        Ok(())
    }

    /// The training calendar, parsed. Validation guarantees this succeeds on loaded settings.
    pub fn calendar(&self) -> Result<Calendar, ConfigError> {
        Calendar::from_settings(&self.trainings, &self.list.id)
            .map_err(|e| ConfigError::Load(e.to_string()))
    }

    /// The domain that Message-IDs and calendar UIDs live on: the List-Id itself.
    pub fn list_domain(&self) -> &str {
        &self.list.id
    }

    pub fn trainings(&self) -> &TrainingsSettings {
        &self.trainings
    }
}

/// Refuses a line break or other control character in a value that goes into a header.
fn one_line(key: &str, value: &str) -> Result<(), ConfigError> {
    if value.chars().any(char::is_control) {
        return Err(ConfigError::invalid(
            key,
            "must be one line (no line breaks or control characters): it goes into mail headers",
        ));
    }
    Ok(())
}

/// A settings value built only from the committed defaults, for tests and `preview`.
pub fn load_from(dir: &Path, extra: Option<PathBuf>) -> Result<Settings, ConfigError> {
    Sources {
        default_file: dir.join("default.toml"),
        extra_file: extra,
    }
    .load()
}
