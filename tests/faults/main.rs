//! Fault tests: the real `harborlist serve` binary killed with SIGKILL mid-run, several
//! instances on one PostgreSQL database, and a relay that fails temporarily, drops
//! connections or rejects recipients. They check the queue's promises (ARCHITECTURE.md,
//! "Exactly once"): nothing is lost, repeats are bounded by the messages in flight and carry
//! the same Message-ID, and permanent failures are neither retried nor sent to again.
//!
//! Sizes come from `HARBORLIST_FAULT_MESSAGES` (default 1500) and `HARBORLIST_FAULT_KILLS`
//! (default 4); `scripts/faults` runs the full size. `HARBORLIST_FAULT_SEED` repeats a run's
//! random kill timing.

#[path = "../api/helpers/mod.rs"]
mod helpers;

mod flaky;
mod instances;
mod kill9;
mod sink;

use std::collections::{BTreeMap, HashMap};

use chrono::{SecondsFormat, Utc};
use harborlist::{domain::new_nonce, store::Store};
use sqlx::Row;

use crate::{helpers::DaemonSetup, sink::FaultSink};

/// `mail.pool_size` of every daemon here: the messages one instance has in flight.
pub const POOL_SIZE: usize = 4;

fn env_size(name: &str, default: usize) -> usize {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{name} must be a number, not {v:?}")),
        Err(_) => default,
    }
}

/// Subscribers per run.
pub fn messages() -> usize {
    env_size("HARBORLIST_FAULT_MESSAGES", 1500).max(1)
}

/// SIGKILLs per run.
pub fn kills() -> usize {
    env_size("HARBORLIST_FAULT_KILLS", 4)
}

/// A small xorshift generator: no extra dependency, and a printed seed repeats a run.
pub struct Rng(u64);

impl Rng {
    pub fn new(what: &str) -> Self {
        let seed = std::env::var("HARBORLIST_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos() as u64)
                    .unwrap_or(1)
            });
        eprintln!("[{what}] HARBORLIST_FAULT_SEED={seed}");
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }
}

/// Replaces the one line of `toml` that sets `key`, and checks there was exactly one.
fn set_line(toml: &str, key: &str, value: &str) -> String {
    let mut hits = 0;
    let out: Vec<String> = toml
        .lines()
        .map(|line| {
            if line.split('=').next().map(str::trim) == Some(key) {
                hits += 1;
                format!("{key} = {value}")
            } else {
                line.to_owned()
            }
        })
        .collect();
    assert_eq!(hits, 1, "config/default.toml sets {key} exactly once");
    out.join("\n") + "\n"
}

/// A daemon setup on `db_url` and `sink`: pool of [`POOL_SIZE`], a 3 s lease so a killed
/// instance's claims come back quickly, quick polling and config watching, and a one-second
/// planning horizon so no training reminder joins the mail under test.
pub fn setup(db_url: &str, sink: &FaultSink) -> DaemonSetup {
    let setup = DaemonSetup::new(
        db_url,
        &sink.url(),
        "[schedule]\npoll = \"200ms\"\ntick = \"1s\"\nwatch = \"300ms\"\nhorizon = \"1s\"\n",
    );
    // The per-launch file already has a [mail] table, so mail keys go into this setup's
    // own copy of the defaults.
    let path = setup.config_dir().join("default.toml");
    let mut toml = std::fs::read_to_string(&path).expect("default.toml");
    toml = set_line(&toml, "lease", "\"3s\"");
    toml = set_line(&toml, "pool_size", &POOL_SIZE.to_string());
    std::fs::write(&path, toml).expect("write default.toml");
    setup
}

/// The address of subscriber `i`.
pub fn address(i: usize) -> String {
    format!("r{i:05}@example.org")
}

/// Inserts active subscribers in multi-row INSERTs (the schema comes from `Store::connect`).
pub async fn seed_bulk(store: &Store, emails: &[String]) {
    const CHUNK: usize = 500;
    for (c, chunk) in emails.chunks(CHUNK).enumerate() {
        let rows: Vec<String> = (0..chunk.len())
            .map(|i| {
                let b = i * 4;
                format!(
                    "(${}, ${}, NULL, 'active', 'import', ${}, ${}, 0, 0, 0)",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4
                )
            })
            .collect();
        let sql = format!(
            "INSERT INTO subscribers (email, email_key, name, status, source, unsub_nonce, unsub_hash, created_at, updated_at, confirmed_at) VALUES {}",
            rows.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, email) in chunk.iter().enumerate() {
            q = q
                .bind(email.clone())
                .bind(email.to_lowercase())
                .bind(new_nonce())
                .bind(format!("fault-hash-{}", c * CHUNK + i));
        }
        q.execute(store.pool())
            .await
            .expect("bulk insert subscribers");
    }
}

/// `announcements.toml` entries: (id, seconds from now, subject).
pub fn announcements(entries: &[(&str, i64, &str)]) -> String {
    entries
        .iter()
        .map(|(id, in_secs, subject)| {
            let at = (Utc::now() + chrono::Duration::seconds(*in_secs))
                .to_rfc3339_opts(SecondsFormat::Secs, true);
            format!(
                "[[announcements]]\nid = \"{id}\"\nsend_at = \"{at}\"\nsubject = \"{subject}\"\nmarkdown = \"Fault test {id}.\"\n\n"
            )
        })
        .collect()
}

/// What arrived for one mailing, per recipient.
#[derive(Debug)]
pub struct Tally {
    pub total: usize,
    pub lost: Vec<String>,
    pub duplicates: usize,
    /// Recipients whose copies carry different Message-IDs.
    pub mixed_ids: Vec<String>,
    /// Message-IDs seen for more than one recipient.
    pub shared_ids: usize,
    pub unexpected: Vec<String>,
}

pub fn tally(sink: &FaultSink, subject: &str, emails: &[String]) -> Tally {
    let msgs = sink.with_subject(subject);
    let mut per: HashMap<String, Vec<String>> = HashMap::new();
    for m in &msgs {
        assert_eq!(m.to.len(), 1, "one recipient per message: {:?}", m.to);
        assert!(!m.message_id.is_empty(), "every message has a Message-ID");
        per.entry(m.to[0].to_lowercase())
            .or_default()
            .push(m.message_id.clone());
    }
    let mut owners: HashMap<&str, &str> = HashMap::new();
    let mut shared_ids = 0;
    for (to, ids) in &per {
        if let Some(prev) = owners.insert(&ids[0], to)
            && prev != to
        {
            shared_ids += 1;
        }
    }
    let wanted: std::collections::HashSet<String> =
        emails.iter().map(|e| e.to_lowercase()).collect();
    Tally {
        total: msgs.len(),
        lost: emails
            .iter()
            .filter(|e| !per.contains_key(&e.to_lowercase()))
            .cloned()
            .collect(),
        duplicates: per.values().map(|ids| ids.len() - 1).sum(),
        mixed_ids: per
            .iter()
            .filter(|(_, ids)| ids.iter().any(|id| id != &ids[0]))
            .map(|(to, _)| to.clone())
            .collect(),
        shared_ids,
        unexpected: per
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect(),
    }
}

/// Delivery states of one mailing, with counts.
pub async fn delivery_states(store: &Store, mailing_key: &str) -> BTreeMap<String, i64> {
    sqlx::query(
        "SELECT d.state, COUNT(*) AS n FROM deliveries d JOIN mailings m ON m.id = d.mailing_id
         WHERE m.key = $1 GROUP BY d.state",
    )
    .bind(mailing_key)
    .fetch_all(store.pool())
    .await
    .expect("delivery states")
    .iter()
    .map(|r| (r.get::<String, _>("state"), r.get::<i64, _>("n")))
    .collect()
}

/// One recipient's delivery of one mailing: (state, attempts), if the row exists.
pub async fn delivery_of(store: &Store, mailing_key: &str, email: &str) -> Option<(String, i64)> {
    sqlx::query(
        "SELECT d.state, d.attempts FROM deliveries d
         JOIN mailings m ON m.id = d.mailing_id JOIN subscribers s ON s.id = d.subscriber_id
         WHERE m.key = $1 AND s.email_key = $2",
    )
    .bind(mailing_key)
    .bind(email.to_lowercase())
    .fetch_optional(store.pool())
    .await
    .expect("delivery row")
    .map(|r| (r.get("state"), r.get("attempts")))
}

/// A subscriber's (status, bounce score, whole points).
pub async fn subscriber_state(store: &Store, email: &str) -> (String, i64) {
    let r = sqlx::query("SELECT status, bounce_score FROM subscribers WHERE email_key = $1")
        .bind(email.to_lowercase())
        .fetch_one(store.pool())
        .await
        .expect("subscriber row");
    (r.get("status"), r.get::<f64, _>("bounce_score") as i64)
}

/// Waits until the mailing has at least `expected` deliveries and none is queued or sending.
pub async fn settled(store: &Store, mailing_key: &str, expected: i64, secs: u64) {
    helpers::eventually(secs, &format!("{mailing_key} to settle"), || async {
        let states = delivery_states(store, mailing_key).await;
        let total: i64 = states.values().sum();
        let open = states.get("queued").copied().unwrap_or(0)
            + states.get("sending").copied().unwrap_or(0);
        (total >= expected && open == 0).then_some(())
    })
    .await;
}
