//! The runtime: everything derived from one version of the configuration.
//!
//! [`Runtime`] holds the templates, token key, calendar and composer built from one
//! [`Settings`]. It sits behind [`Live`], which every task reads from and which a reload
//! swaps in one step, so a request or a batch always sees one consistent version. Building
//! a runtime has no side effects except creating the token key file on a fresh install
//! (only when asked, see [`keys::KeyFile`]), so a reload can try it and keep the old one on
//! error. [`keys`] loads the token keys and checks them against the database.

pub mod keys;

use std::sync::{Arc, RwLock};

pub use keys::KeyFile;

use crate::{
    calendar::Calendar,
    config::{ConfigError, Settings},
    domain::TokenKey,
    mail::{Composer, Identity, MailError, dkim},
    templates::{EmailTemplates, TemplateError, WebTemplates},
};

/// Why a configuration could not become a runtime. Each names the key or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Template(#[from] TemplateError),
    #[error(transparent)]
    Mail(#[from] MailError),
    #[error("{0}")]
    Key(String),
}

/// Everything derived from one version of the configuration.
#[derive(Debug)]
pub struct Runtime {
    pub settings: Arc<Settings>,
    pub composer: Composer,
    pub web: Arc<WebTemplates>,
    pub key: TokenKey,
    /// `security.previous_token_keys`: only to recognise the key a rotation comes from.
    pub previous_keys: Vec<TokenKey>,
    pub calendar: Arc<Calendar>,
    /// When this process loaded the configuration, by its clock; `None` if not stamped.
    /// Several instances can hold different configurations for a moment (one has reloaded
    /// an edit, another not yet), and the planner acts on its view only where that view
    /// is newer than the rows it would change (see [`Runtime::config_ms`]).
    pub loaded_ms: Option<i64>,
}

impl Runtime {
    /// `[bounces]`'s scoring rules (its defaults when the section is absent: the send-time
    /// rule scores without it).
    pub fn bounce_rules(&self) -> crate::store::bounces::BounceRules {
        let b = self.settings.bounces.clone().unwrap_or_default();
        crate::store::bounces::BounceRules {
            soft_weight: b.soft_weight,
            threshold: f64::from(b.threshold),
            stale_after_ms: i64::try_from(b.stale_after.std().as_millis()).unwrap_or(i64::MAX),
        }
    }

    /// Loads and checks everything the settings point at; a missing key file is an error.
    /// Fails without side effects, so a reload can try it and keep the old runtime.
    pub fn build(settings: Settings) -> Result<Self, RuntimeError> {
        Self::build_with(settings, KeyFile::MustExist)
    }

    /// As [`Runtime::build`], but never writes: a missing key file gives a throwaway key.
    /// For `check`, `preview` and `send-test`, which staff may run as another user.
    pub fn build_read_only(settings: Settings) -> Result<Self, RuntimeError> {
        Self::build_with(settings, KeyFile::Ephemeral)
    }

    /// The newest row a planner may change or close from this configuration: rows written
    /// later were written by an instance that had loaded a newer one. An unstamped runtime
    /// (tests that build their own) is not limited.
    pub fn config_ms(&self) -> i64 {
        self.loaded_ms.unwrap_or(i64::MAX)
    }

    /// The token keys this runtime holds.
    pub fn key_ring(&self) -> keys::KeyRing {
        keys::KeyRing {
            current: self.key.clone(),
            previous: self.previous_keys.clone(),
        }
    }

    /// As [`Runtime::build`], with `key_file` saying what a missing key file means.
    pub fn build_with(settings: Settings, key_file: KeyFile) -> Result<Self, RuntimeError> {
        let ring = keys::load(&settings, key_file)?;
        Self::build_keyed(settings, ring)
    }

    /// As [`Runtime::build`], with keys already loaded: a reload keeps the running ones.
    pub fn build_keyed(settings: Settings, ring: keys::KeyRing) -> Result<Self, RuntimeError> {
        let calendar = settings.calendar()?;
        let email = Arc::new(EmailTemplates::load(&settings.templates.dir)?);
        let web = Arc::new(WebTemplates::load(&settings.templates.dir)?);
        for required in [
            "confirm",
            "welcome",
            "goodbye",
            "announcement",
            "update",
            "cancellation",
        ]
        .into_iter()
        .chain(settings.reminders.iter().map(|r| r.template.as_str()))
        .chain(
            settings
                .announcements
                .iter()
                .filter_map(|a| a.template.as_deref()),
        ) {
            if !email.has(required) {
                return Err(ConfigError::invalid(
                    "templates.dir",
                    format!(
                        "{} has no email template {required:?}",
                        settings.templates.dir.display()
                    ),
                )
                .into());
            }
        }
        let dkim = settings.mail.dkim.as_ref().map(dkim::load).transpose()?;
        let composer = Composer::new(
            Identity::from_settings(&settings),
            email,
            ring.current.clone(),
            dkim,
        );
        Ok(Self {
            settings: Arc::new(settings),
            composer,
            web,
            key: ring.current,
            previous_keys: ring.previous,
            calendar: Arc::new(calendar),
            loaded_ms: None,
        })
    }
}

/// The current [`Runtime`], swappable by a reload.
#[derive(Clone, Debug)]
pub struct Live(Arc<RwLock<Arc<Runtime>>>);

impl Live {
    pub fn new(runtime: Runtime) -> Self {
        Self(Arc::new(RwLock::new(Arc::new(runtime))))
    }

    pub fn current(&self) -> Arc<Runtime> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn replace(&self, runtime: Runtime) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(runtime);
    }

    pub fn settings(&self) -> Arc<Settings> {
        self.current().settings.clone()
    }

    pub fn composer(&self) -> Composer {
        self.current().composer.clone()
    }

    pub fn web(&self) -> Arc<WebTemplates> {
        self.current().web.clone()
    }

    pub fn token_key(&self) -> TokenKey {
        self.current().key.clone()
    }

    pub fn calendar(&self) -> Arc<Calendar> {
        self.current().calendar.clone()
    }
}
