//! The runtime: everything derived from one version of the configuration.
//!
//! [`Runtime`] holds the templates, token key, calendar and composer built from one
//! [`Settings`]. It sits behind [`Live`], which every task reads from and which a reload
//! swaps in one step, so a request or a batch always sees one consistent version. Building
//! a runtime has no side effects except creating the token key file on a fresh install, so
//! a reload can try it and keep the old one on error.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

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
    pub calendar: Arc<Calendar>,
    /// When this process loaded the configuration, by its clock; `None` if not stamped.
    /// Several instances can hold different configurations for a moment (one has reloaded
    /// an edit, another not yet), and the planner acts on its view only where that view
    /// is newer than the rows it would change (see [`Runtime::config_ms`]).
    pub loaded_ms: Option<i64>,
}

impl Runtime {
    /// Loads and checks everything the settings point at, creating the token key file if
    /// it is missing (the daemon's first start). Fails without other side effects, so a
    /// reload can try it and keep the old runtime on error.
    pub fn build(settings: Settings) -> Result<Self, RuntimeError> {
        Self::build_with(settings, KeyFile::Create)
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

    fn build_with(settings: Settings, key_file: KeyFile) -> Result<Self, RuntimeError> {
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
        let key = token_key(&settings, key_file)?;
        let dkim = settings.mail.dkim.as_ref().map(dkim::load).transpose()?;
        let composer = Composer::new(Identity::from_settings(&settings), email, key.clone(), dkim);
        Ok(Self {
            settings: Arc::new(settings),
            composer,
            web,
            key,
            calendar: Arc::new(calendar),
            loaded_ms: None,
        })
    }
}

/// The token key: `security.token_key` if set, else the key file (created on first use,
/// readable only by us). Several instances must share one key: set it in config or point
/// them at the same file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyFile {
    Create,
    Ephemeral,
}

fn token_key(settings: &Settings, key_file: KeyFile) -> Result<TokenKey, RuntimeError> {
    if let Some(text) = &settings.security.token_key {
        return TokenKey::parse(text)
            .map_err(|e| RuntimeError::Key(format!("security.token_key: {e}")));
    }
    let path = settings
        .security
        .token_key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from("data/harborlist.key"));
    let key_err = |what: String| RuntimeError::Key(format!("security.token_key_file: {what}"));
    if !path.exists() && key_file == KeyFile::Ephemeral {
        return TokenKey::parse(&TokenKey::generate_text()).map_err(|e| key_err(e.to_string()));
    }
    if !path.exists() {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| key_err(format!("cannot create {}: {e}", dir.display())))?;
        }
        write_private(&path, &TokenKey::generate_text())
            .map_err(|e| key_err(format!("cannot create {}: {e}", path.display())))?;
        tracing::info!(path = %path.display(), "created a new token key");
    }
    let text = std::fs::read_to_string(&path)
        .map_err(|e| key_err(format!("cannot read {}: {e}", path.display())))?;
    TokenKey::parse(&text).map_err(|e| key_err(format!("{}: {e}", path.display())))
}

fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
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
