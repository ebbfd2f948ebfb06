//! The token key: which one, where it comes from, and whether the database agrees.
//!
//! Links are derived from the key at send time, and found again by their hash in the
//! database. A database therefore belongs to one key: under another, new mail carries
//! links that do not work. So the first `serve` (or `subscribers import`) pins a one-way
//! fingerprint of its key in `service_state` ([`FINGERPRINT`]), and every later `serve`,
//! reload and database command first checks its key against it ([`agreement`]):
//!
//! * no fingerprint yet: a fresh install; only here may a key file be created;
//! * the same key: carry on;
//! * the pinned key is among `security.previous_token_keys`: a rotation. `serve` and
//!   `subscribers import` carry it out ([`claim`]): every link is registered again under
//!   the new key (`crate::store::relink`), keeping the old hashes, then the fingerprint
//!   is re-pinned. Other commands accept it and leave the work to them;
//! * anything else: refused, naming the keys and the way out.

use std::path::{Path, PathBuf};

use super::RuntimeError;
use crate::{
    config::Settings,
    domain::{TokenKey, TokenPurpose},
    store::Store,
};

/// The `service_state` row holding the pinned key's fingerprint.
pub const FINGERPRINT: &str = "token_key_fingerprint";

/// The key file used when neither `security.token_key` nor `token_key_file` is set.
const DEFAULT_KEY_FILE: &str = "data/harborlist.key";

/// What a missing key file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyFile {
    /// Create it: a fresh install (the database has no fingerprint yet).
    Create,
    /// An error: the database was made with a key, and a new one would not match it.
    MustExist,
    /// Use a throwaway key: `check`, `preview` and `send-test`, which write nothing.
    Ephemeral,
}

/// The current key, and the earlier ones a rotation came from.
#[derive(Debug, Clone)]
pub struct KeyRing {
    pub current: TokenKey,
    pub previous: Vec<TokenKey>,
}

/// How a key ring stands to the database's fingerprint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agreement {
    /// No fingerprint yet.
    Fresh,
    /// The pinned key is the current one.
    Same,
    /// The pinned key is one of the previous keys: a rotation still to be carried out.
    Rotation,
}

/// Loads `security.token_key` (or its file) and `security.previous_token_keys`.
pub fn load(settings: &Settings, key_file: KeyFile) -> Result<KeyRing, RuntimeError> {
    let current = current_key(settings, key_file)?;
    let previous = settings
        .security
        .previous_token_keys
        .iter()
        .enumerate()
        .map(|(i, entry)| {
            let at = format!("security.previous_token_keys[{i}]");
            match (&entry.key, &entry.file) {
                (Some(text), None) => TokenKey::parse(text.expose())
                    .map_err(|e| RuntimeError::Key(format!("{at}.key: {e}"))),
                (None, Some(path)) => read_key(path, &format!("{at}.file")),
                _ => Err(RuntimeError::Key(format!(
                    "{at}: give exactly one of key = \"…\" (base64) or file = \"…\" (a key file)"
                ))),
            }
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(KeyRing { current, previous })
}

/// Where the current key comes from, as the config names it.
pub fn key_source(settings: &Settings) -> String {
    match &settings.security.token_key {
        Some(_) => "security.token_key".into(),
        None => format!("security.token_key_file ({})", key_path(settings).display()),
    }
}

/// The key file the current key is read from when `security.token_key` is not set.
pub fn key_path(settings: &Settings) -> PathBuf {
    settings
        .security
        .token_key_file
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_KEY_FILE))
}

fn current_key(settings: &Settings, key_file: KeyFile) -> Result<TokenKey, RuntimeError> {
    if let Some(text) = &settings.security.token_key {
        return TokenKey::parse(text.expose())
            .map_err(|e| RuntimeError::Key(format!("security.token_key: {e}")));
    }
    let path = key_path(settings);
    let key_err = |what: String| RuntimeError::Key(format!("security.token_key_file: {what}"));
    if !path.exists() {
        match key_file {
            KeyFile::Ephemeral => {
                return TokenKey::parse(&TokenKey::generate_text())
                    .map_err(|e| key_err(e.to_string()));
            }
            KeyFile::MustExist => {
                return Err(key_err(format!(
                    "{} does not exist, but this database's links were made with a token key \
                     (it holds the key's fingerprint). A new key would make the links in mail \
                     already sent stop working. Restore the key file, or set \
                     security.token_key to the same key (run from the folder the relative \
                     path was meant for, or give an absolute path).",
                    path.display()
                )));
            }
            KeyFile::Create => create_key_file(&path).map_err(key_err)?,
        }
    }
    read_key(&path, "security.token_key_file")
}

fn create_key_file(path: &Path) -> Result<(), String> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        crate::fsutil::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    write_private(path, &TokenKey::generate_text())
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    tracing::info!(path = %path.display(), "created a new token key");
    Ok(())
}

fn read_key(path: &Path, at: &str) -> Result<TokenKey, RuntimeError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| RuntimeError::Key(format!("{at}: cannot read {}: {e}", path.display())))?;
    TokenKey::parse(&text).map_err(|e| RuntimeError::Key(format!("{at}: {}: {e}", path.display())))
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    // Never over an existing file: that would be a different key.
    let mut file = crate::fsutil::create_new(path)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()
}

/// The database's pinned fingerprint, if any.
pub async fn pinned(store: &Store) -> Result<Option<String>, RuntimeError> {
    Ok(store
        .state(FINGERPRINT)
        .await
        .map_err(|e| RuntimeError::Key(format!("cannot read the token key's fingerprint: {e}")))?
        .map(|s| s.value))
}

/// How `ring` stands to the fingerprint `pinned`; a key that matches neither is refused
/// with an error for the operator, naming `source` (see [`key_source`]).
pub fn agreement(
    pinned: Option<&str>,
    ring: &KeyRing,
    source: &str,
) -> Result<Agreement, RuntimeError> {
    let Some(pinned) = pinned else {
        return Ok(Agreement::Fresh);
    };
    if ring.current.fingerprint() == pinned {
        return Ok(Agreement::Same);
    }
    if ring.previous.iter().any(|k| k.fingerprint() == pinned) {
        return Ok(Agreement::Rotation);
    }
    Err(RuntimeError::Key(format!(
        "{source}: this is not the token key this database's links were made with \
         (security.token_key / security.token_key_file; the database keeps the key's \
         fingerprint). The links in mail already sent were made with that key, and new mail \
         must use it too: with this one, new mail would carry unsubscribe and confirm links \
         that answer \"This link isn't valid\". Restore the old key; or, to change \
         keys on purpose, list the old one in security.previous_token_keys (deploy/README.md, \
         \"Token-key rotation\")."
    )))
}

/// Checks `ring` against the database, for a command that only reads or removes.
pub async fn check(store: &Store, ring: &KeyRing, source: &str) -> Result<Agreement, RuntimeError> {
    agreement(pinned(store).await?.as_deref(), ring, source)
}

/// Makes the database's links `ring.current`'s, for `serve` and `subscribers import`: pins
/// the key on a fresh install, carries out a rotation, and refuses a key that matches
/// neither.
pub async fn claim(
    store: &Store,
    ring: &KeyRing,
    source: &str,
    now_ms: i64,
) -> Result<(), RuntimeError> {
    let fingerprint = ring.current.fingerprint();
    let db_err = |e: crate::store::StoreError| {
        RuntimeError::Key(format!("cannot store the token key's fingerprint: {e}"))
    };
    match check(store, ring, source).await? {
        Agreement::Same => Ok(()),
        Agreement::Fresh => {
            // Two instances starting at once: whichever pins first wins, and the other is
            // checked against it.
            let stored = store
                .pin_state(FINGERPRINT, &fingerprint, now_ms)
                .await
                .map_err(db_err)?;
            if stored != fingerprint {
                agreement(Some(&stored), ring, source)?;
            }
            tracing::info!("pinned the token key's fingerprint in the database");
            Ok(())
        }
        Agreement::Rotation => {
            relink(store, &ring.current, now_ms).await.map_err(db_err)?;
            store
                .set_state(FINGERPRINT, &fingerprint, now_ms)
                .await
                .map_err(db_err)?;
            tracing::warn!(
                "token key rotated: links in mail already sent keep working, new mail uses the new key"
            );
            Ok(())
        }
    }
}

/// Registers every registration's link under `key`, page by page; returns how many moved.
async fn relink_registrations(store: &Store, key: &TokenKey) -> crate::store::Result<usize> {
    const PAGE: i64 = 1_000;
    let mut after = 0;
    let mut moved = 0usize;
    loop {
        let links = store.registration_links_after(after, PAGE).await?;
        let Some(last) = links.last() else { break };
        after = last.registration_id;
        let moves: Vec<_> = links
            .into_iter()
            .filter_map(|link| {
                let hash = key.derive(TokenPurpose::Registration, &link.nonce).hash();
                (hash != link.hash).then_some((link, hash))
            })
            .collect();
        moved += moves.len();
        if !moves.is_empty() {
            store.relink_registrations(&moves).await?;
        }
    }
    Ok(moved)
}

/// Registers every subscriber's unsubscribe link, every registration's link and every
/// open confirmation link under `key` (see `crate::store::relink`).
async fn relink(store: &Store, key: &TokenKey, now_ms: i64) -> crate::store::Result<()> {
    const PAGE: i64 = 1_000;
    let mut after = 0;
    let mut moved = 0usize;
    loop {
        let links = store.unsubscribe_links_after(after, PAGE).await?;
        let Some(last) = links.last() else { break };
        after = last.subscriber_id;
        let moves: Vec<_> = links
            .into_iter()
            .filter_map(|link| {
                let hash = key.derive(TokenPurpose::Unsubscribe, &link.nonce).hash();
                (hash != link.hash).then_some((link, hash))
            })
            .collect();
        moved += moves.len();
        if !moves.is_empty() {
            store.relink_unsubscribe(&moves).await?;
        }
    }
    let registrations = relink_registrations(store, key).await?;
    let open = store.open_confirmations(now_ms).await?;
    for confirmation in &open {
        let hash = key
            .derive(TokenPurpose::Confirm, &confirmation.nonce)
            .hash();
        store.relink_confirmation(confirmation, &hash).await?;
    }
    tracing::info!(
        unsubscribe_links = moved,
        registration_links = registrations,
        confirmation_links = open.len(),
        "registered links under the new token key"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::PreviousTokenKey;

    fn ring(current: &TokenKey, previous: &[&TokenKey]) -> KeyRing {
        KeyRing {
            current: current.clone(),
            previous: previous.iter().map(|k| (*k).clone()).collect(),
        }
    }

    fn key() -> TokenKey {
        TokenKey::parse(&TokenKey::generate_text()).expect("key")
    }

    #[test]
    fn a_key_agrees_when_pinned_rotates_from_a_previous_one_and_is_refused_otherwise() {
        let (old, new, stranger) = (key(), key(), key());
        let src = "security.token_key";
        let a = |pinned: Option<String>, r: &KeyRing| agreement(pinned.as_deref(), r, src);
        assert_eq!(a(None, &ring(&new, &[])).unwrap(), Agreement::Fresh);
        assert_eq!(
            a(Some(new.fingerprint()), &ring(&new, &[])).unwrap(),
            Agreement::Same
        );
        assert_eq!(
            a(Some(old.fingerprint()), &ring(&new, &[&stranger, &old])).unwrap(),
            Agreement::Rotation
        );
        let err = a(Some(old.fingerprint()), &ring(&new, &[&stranger]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(src) && err.contains("security.previous_token_keys"),
            "{err}"
        );
    }

    #[test]
    fn a_previous_key_is_one_of_key_or_file_and_is_named_when_wrong() {
        let mut settings = crate::config::load_from(Path::new("config"), None).expect("defaults");
        settings.security.token_key = Some(TokenKey::generate_text().into());
        settings.security.previous_token_keys = vec![
            PreviousTokenKey {
                key: Some(TokenKey::generate_text().into()),
                file: None,
            },
            PreviousTokenKey::default(),
        ];
        let err = load(&settings, KeyFile::MustExist).unwrap_err().to_string();
        assert!(err.starts_with("security.previous_token_keys[1]"), "{err}");
        settings.security.previous_token_keys[1].file = Some("/nonexistent/old.key".into());
        let err = load(&settings, KeyFile::MustExist).unwrap_err().to_string();
        assert!(
            err.starts_with("security.previous_token_keys[1].file")
                && !Path::new("/nonexistent").exists(),
            "{err}"
        );
        settings.security.previous_token_keys.truncate(1);
        assert_eq!(
            load(&settings, KeyFile::MustExist).unwrap().previous.len(),
            1
        );
    }

    #[test]
    fn a_missing_key_file_is_created_only_when_asked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("sub/harborlist.key");
        let mut settings = crate::config::load_from(Path::new("config"), None).expect("defaults");
        settings.security.token_key = None;
        settings.security.token_key_file = Some(path.clone());
        let err = load(&settings, KeyFile::MustExist).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        load(&settings, KeyFile::Ephemeral).expect("a throwaway key");
        assert!(!path.exists());
        let created = load(&settings, KeyFile::Create).expect("created").current;
        assert!(path.exists());
        let again = load(&settings, KeyFile::MustExist)
            .expect("read back")
            .current;
        assert_eq!(created.fingerprint(), again.fingerprint());
    }
}
