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

    pub fn load(&self) -> Result<Settings, ConfigError> {
        let mut builder = config::Config::builder();
        // The committed defaults are required only if they exist: a packaged install may ship
        // one complete file instead, named with --config.
        builder = builder.add_source(
            config::File::from(self.default_file.as_path())
                .format(config::FileFormat::Toml)
                .required(self.extra_file.is_none()),
        );
        builder = builder.add_source(
            config::File::from(self.announcements_file().as_path())
                .format(config::FileFormat::Toml)
                .required(false),
        );
        if let Some(extra) = &self.extra_file {
            if !extra.exists() {
                return Err(ConfigError::Load(format!(
                    "{}: no such configuration file",
                    extra.display()
                )));
            }
            builder = builder.add_source(
                config::File::from(extra.as_path())
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        builder = builder.add_source(
            config::Environment::with_prefix("HARBORLIST")
                .prefix_separator("__")
                .separator("__")
                .try_parsing(true),
        );
        let raw = builder
            .build()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        let settings: Settings = raw
            .try_deserialize()
            .map_err(|e| ConfigError::Load(e.to_string()))?;
        settings.validate()?;
        Ok(settings)
    }
}

impl Settings {
    /// Checks that span keys, or need more than a type to check. Field types already
    /// refused anything unparseable.
    /// The listeners: the metrics address, and the origins allowed to post forms.
    fn validate_server(&self) -> Result<(), ConfigError> {
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

    pub fn validate(&self) -> Result<(), ConfigError> {
        self.validate_server()?;
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
        if self.mail.transport == TransportKind::Smtp {
            let url = self.mail.smtp_url.as_deref().unwrap_or("");
            if url.is_empty() {
                return Err(ConfigError::invalid(
                    "mail.smtp_url",
                    "is required when mail.transport = \"smtp\" (e.g. \"smtp://127.0.0.1:25\")",
                ));
            }
            lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
                .map_err(|e| ConfigError::invalid("mail.smtp_url", e))?;
        }
        if self.mail.pool_size == 0 {
            return Err(ConfigError::invalid("mail.pool_size", "must be at least 1"));
        }
        if !(self.mail.max_per_second >= 0.0 && self.mail.max_per_second.is_finite()) {
            return Err(ConfigError::invalid(
                "mail.max_per_second",
                "must be 0 (no limit) or a positive number",
            ));
        }
        if self.mail.max_attempts == 0 {
            return Err(ConfigError::invalid(
                "mail.max_attempts",
                "must be at least 1",
            ));
        }
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
        if self.subscriptions.max_confirmations_per_day == 0 {
            return Err(ConfigError::invalid(
                "subscriptions.max_confirmations_per_day",
                "must be at least 1",
            ));
        }
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
            if let Some(date) = a.training
                && calendar.session_on(date).is_none()
            {
                return Err(ConfigError::invalid(
                    format!("announcements[{i}].training"),
                    format!("there is no training on {date} (see `harborlist trainings`)"),
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

/// A settings value built only from the committed defaults, for tests and `preview`.
pub fn load_from(dir: &Path, extra: Option<PathBuf>) -> Result<Settings, ConfigError> {
    Sources {
        default_file: dir.join("default.toml"),
        extra_file: extra,
    }
    .load()
}
