//! Random and mutated configurations and templates through the real loading and checking
//! path (`config::load_from`, `Runtime::build_read_only`, `preflight::findings`, and the
//! planner's pure arithmetic on what was accepted): none may panic.
//!
//! A deterministic mutation loop (xorshift, fixed seeds), so a failure is reproducible by
//! its case number.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
};

use chrono::Utc;
use harborlist::{config::load_from, preflight, runtime::Runtime, schedule::plan};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NASTY: &[&str] = &[
    "\"0s\"",
    "\"100000000d\"",
    "\"1ms\"",
    "\"18446744073709551615s\"",
    "\"-1s\"",
    "\"\"",
    "0",
    "-1",
    "4294967295",
    "18446744073709551615",
    "1e308",
    "-1e308",
    "nan",
    "inf",
    "0.0000001",
    "true",
    "[]",
    "{}",
    "\"a\\r\\nBcc: x@example.org\"",
    "\"\\u0000\"",
    "\"2026-05-01T09:00\"",
    "\"9999-12-31T23:59\"",
    "\"0000-01-01T00:00\"",
    "\"2027-02-29T09:00\"",
    "\"2027-03-14T02:30\"",
    "\"smtp://[::1\"",
    "\"sqlite://\"",
    "\"postgres://\"",
    "\"FREQ=SECONDLY\"",
    "\"FREQ=DAILY;COUNT=0\"",
    "\"FREQ=YEARLY;BYMONTH=13\"",
    "\"99:99\"",
    "\"America/Nowhere\"",
    "\"24h 1000000d\"",
    "\"ünïcödé\"",
];

const KEYS: &[(&str, &str)] = &[
    ("server", "public_url"),
    ("database", "max_connections"),
    ("mail", "pool_size"),
    ("mail", "max_per_second"),
    ("mail", "max_attempts"),
    ("mail", "retry_base"),
    ("mail", "retry_max"),
    ("mail", "smtp_timeout"),
    ("mail", "lease"),
    ("mail", "from"),
    ("list", "name"),
    ("list", "id"),
    ("subscriptions", "confirm_ttl"),
    ("subscriptions", "max_confirmations_per_day"),
    ("schedule", "tick"),
    ("schedule", "poll"),
    ("schedule", "horizon"),
    ("schedule", "watch"),
    ("trainings", "rrule"),
    ("trainings", "starts_on"),
    ("trainings", "start_time"),
    ("trainings", "duration"),
    ("trainings", "timezone"),
    ("announcements", "max_late"),
];

const EXTRA: &str = "\n[[announcements]]\nid = \"fuzz\"\nsend_at = \"2027-05-01T09:00\"\nsubject = \"S\"\nmarkdown = \"Hi **there**\"\ntraining = \"2027-05-19\"\n";

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    for _ in 0..=rng.below(3) {
        let i = rng.below(lines.len());
        match rng.below(7) {
            0 => {
                if let Some((k, _)) = lines[i].clone().split_once(" = ") {
                    lines[i] = format!("{k} = {}", rng.pick(NASTY));
                }
            }
            1 => {
                lines.remove(i);
            }
            2 => {
                let line = lines[i].clone();
                lines.insert(i, line);
            }
            3 => {
                let (section, key) = rng.pick(KEYS);
                lines.push(format!("[{section}]\n{key} = {}", rng.pick(NASTY)));
            }
            4 => {
                let j = rng.below(lines.len());
                lines.swap(i, j);
            }
            5 => {
                let junk: &[&str] = &["[", "]", "\"", "=", "{{", "\u{0}", "é", "\r", "#"];
                let mut line = lines[i].clone();
                let at = (0..=line.len())
                    .filter(|p| line.is_char_boundary(*p))
                    .nth(rng.below(line.len() + 1))
                    .unwrap_or(0);
                let j = junk[rng.below(junk.len())];
                line.insert_str(at, j);
                lines[i] = line;
            }
            _ => lines.truncate(i + 1),
        }
        if lines.is_empty() {
            lines.push(String::new());
        }
    }
    lines.join("\n")
}

/// Loads `default.toml` (with templates from `templates`) the way every command does, and
/// on success goes on as far as `serve` would before sending anything.
fn exercise(dir: &Path) -> Reached {
    let Ok(settings) = load_from(dir, None) else {
        return Reached::Refused;
    };
    let now = Utc::now();
    let _ = settings.subscriptions.confirm_ttl.after(now);
    let Ok(runtime) = Runtime::build_read_only(settings) else {
        return Reached::Loaded;
    };
    let clean = preflight::findings(&runtime, now)
        .iter()
        .all(|f| f.outcome.is_ok());
    let s = &runtime.settings;
    let sessions = runtime
        .calendar
        .sessions_between(now, s.schedule.horizon.after(now));
    let with_seq: Vec<_> = sessions.into_iter().map(|x| (x, 0)).collect();
    let _ = plan::reminders(
        &with_seq,
        &s.reminders,
        s.registration.mode,
        now,
        "-//fuzz//EN",
    );
    if clean {
        Reached::Accepted
    } else {
        Reached::Built
    }
}

/// How far a case got: refused on load, loaded but no runtime, a runtime that preflight
/// refuses, or accepted as `serve` would.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Reached {
    Refused,
    Loaded,
    Built,
    Accepted,
}

fn run_cases(seed: u64, cases: usize, template_cases: bool) -> (Vec<Reached>, Vec<usize>) {
    let base = std::fs::read_to_string("config/default.toml").unwrap() + EXTRA;
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("templates");
    let mut rng = Rng(seed);
    let mut panics = Vec::new();
    let mut reached = Vec::new();
    let dir = tempfile::tempdir().unwrap();
    let templates = dir.path().join("templates");
    copy(&root, &templates);
    let files = all_files(&templates);
    for case in 0..cases {
        let (config, restore) = if template_cases {
            let file = rng.pick(&files).clone();
            let original = std::fs::read_to_string(&file).unwrap();
            std::fs::write(&file, mutate(&mut rng, &original)).unwrap();
            (base.clone(), Some((file, original)))
        } else {
            (mutate(&mut rng, &base), None)
        };
        let config = format!("{config}\n").replace("[templates]\ndir = \"templates\"", "");
        let config = format!("{config}\n[templates]\ndir = \"{}\"\n", templates.display());
        std::fs::write(dir.path().join("default.toml"), config).unwrap();
        match catch_unwind(AssertUnwindSafe(|| exercise(dir.path()))) {
            Ok(r) => reached.push(r),
            Err(_) => panics.push(case),
        }
        if let Some((file, original)) = restore {
            std::fs::write(file, original).unwrap();
        }
    }
    (reached, panics)
}

fn summary(what: &str, reached: &[Reached], panics: &[usize]) -> String {
    let n = |r: Reached| reached.iter().filter(|x| **x == r).count();
    format!(
        "{} {what}: {} refused on load, {} refused building the runtime, {} refused by preflight, {} accepted; {} panics",
        reached.len() + panics.len(),
        n(Reached::Refused),
        n(Reached::Loaded),
        n(Reached::Built),
        n(Reached::Accepted),
        panics.len()
    )
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        let target = to.join(path.file_name().unwrap());
        if path.is_dir() {
            copy(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

fn all_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(all_files(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]
fn mutated_configs_never_panic() {
    let (reached, panics) = run_cases(0x5eed_c0f1, 400, false);
    println!("{}", summary("mutated configurations", &reached, &panics));
    assert!(panics.is_empty(), "cases that panicked: {panics:?}");
}

#[test]
fn mutated_templates_never_panic() {
    let (reached, panics) = run_cases(0x7e3b_1a7e, 120, true);
    println!("{}", summary("mutated templates", &reached, &panics));
    assert!(panics.is_empty(), "cases that panicked: {panics:?}");
}
