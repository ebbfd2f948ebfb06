//! Opening the database for a staff command, token key checked first.
//!
//! A command that opens the database refuses to run when the configured token key is not
//! the one the database's links were made with (`crate::runtime::keys`): run with the wrong
//! config, `subscribers import` would write links that never work, and the others would be
//! looking at another installation's list. On a fresh install (no fingerprint yet) the
//! reading commands need no key at all, and create none.

use anyhow::Context;

use crate::{
    config::Settings,
    domain::TokenKey,
    runtime::{KeyFile, keys},
    store::Store,
};

/// Connections a staff command opens.
const CONNECTIONS: u32 = 2;

/// The database, for a command that reads it or removes people from it.
pub async fn open(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database.url, CONNECTIONS).await?;
    if keys::pinned(&store).await?.is_some() {
        let ring = keys::load(settings, KeyFile::MustExist)?;
        keys::check(&store, &ring, &keys::key_source(settings)).await?;
    }
    Ok(store)
}

/// The database and the key to derive new links with, for a command that adds people: the
/// key is pinned if the database has none yet (creating the key file only then), and a
/// pending rotation is carried out first.
pub async fn open_to_add(settings: &Settings, now_ms: i64) -> anyhow::Result<(Store, TokenKey)> {
    let store = Store::connect(&settings.database.url, CONNECTIONS).await?;
    let key_file = match keys::pinned(&store).await? {
        None => KeyFile::Create,
        Some(_) => KeyFile::MustExist,
    };
    let ring = keys::load(settings, key_file)?;
    keys::claim(&store, &ring, &keys::key_source(settings), now_ms)
        .await
        .context("the token key")?;
    Ok((store, ring.current))
}
