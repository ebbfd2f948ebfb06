//! The form body fuzzed against the real app (issue 16, item 13): random and mutated
//! `application/x-www-form-urlencoded` bodies POSTed to `/subscribe`, `/confirm/{token}`,
//! a training's registration form (`/trainings/{id}`), a registration's links
//! (`/registrations/{token}/…`) and a member's Register link never get a 5xx and never lose
//! the connection. Fewer cases than `tests/fuzz.rs`, as each
//! is an HTTP request and database work; `PROPTEST_CASES` sets the count here too.

use proptest::{prelude::*, test_runner::TestRunner};

use crate::{
    both_backends,
    helpers::{Backend, TestApp, app, eventually, link_in},
};

both_backends!(random_form_bodies_never_get_a_5xx);

/// One request: where it goes, its headers and its body.
#[derive(Debug, Clone)]
struct Probe {
    target: Target,
    content_type: Option<&'static str>,
    origin: Option<&'static str>,
    body: Vec<u8>,
}

/// Where a probe goes.
#[derive(Debug, Clone)]
enum Target {
    Subscribe,
    Confirm(TokenChoice),
    /// The first upcoming training's registration form.
    Register,
    /// A registration's link (`confirm`, `cancel` or `claim`), never a real one.
    RegistrationLink(&'static str, TokenChoice),
    /// A member's Register link for the first upcoming training, never a real one.
    MemberLink(TokenChoice),
}

#[derive(Debug, Clone)]
enum TokenChoice {
    /// The link from a real confirmation mail.
    Real,
    /// Well formed, but no such token.
    Shaped(String),
    /// Anything, percent-encoded into the path.
    Garbage(Vec<u8>),
}

const KEYS: &[&str] = &[
    "email",
    "name",
    "EMAIL",
    "email[]",
    "",
    "token",
    "name ",
    "e%6dail",
    "organisation",
    "news",
];
const VALUES: &[&str] = &[
    "jane@x.test",
    "\"jane\"@x.test",
    "JANE@X.TEST",
    "ｊａｎｅ@x.test",
    "\u{212a}ate@x.test",
    "a@b",
    "@",
    "Jane Doe",
    "Ann\u{202E}evil",
    "Ann\u{2028}Bcc",
    "x\r\nBcc: v@x.test",
    "\u{0}",
    "\u{1b}[2J",
    "<script>alert(1)</script>",
    "%",
    "%G1",
    "%ff%fe",
    "%00",
    "+",
    "=",
    "&",
    "\u{feff}",
];

/// A body written as a form would (keys and values percent-encoded), or raw, or damaged.
fn body() -> impl Strategy<Value = Vec<u8>> {
    let value = prop_oneof![
        3 => proptest::sample::select(VALUES).prop_map(str::to_owned),
        1 => any::<String>(),
        1 => "[a-z.]{1,10}@[a-z]{1,8}\\.test",
    ];
    let pair = (proptest::sample::select(KEYS), value, 0..3u8);
    let form = proptest::collection::vec(pair, 0..6).prop_map(|pairs| {
        let parts: Vec<String> = pairs
            .into_iter()
            .map(|(k, v, how)| match how {
                0 => format!("{}={}", encode(k.as_bytes()), encode(v.as_bytes())),
                1 => format!("{k}={v}"),
                _ => k.to_owned(),
            })
            .collect();
        parts.join("&").into_bytes()
    });
    // The form as a browser sends it, with a plausible address and any name.
    let filled = (
        "[a-zA-Z0-9.+_-]{1,12}@[a-z0-9-]{1,8}\\.(test|org)",
        prop_oneof![
            proptest::sample::select(VALUES).prop_map(str::to_owned),
            any::<String>()
        ],
    )
        .prop_map(|(email, name)| {
            format!(
                "email={}&name={}",
                encode(email.as_bytes()),
                encode(name.as_bytes())
            )
            .into_bytes()
        });
    let form = prop_oneof![form, filled];
    let damaged = (
        form.clone(),
        proptest::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6),
    )
        .prop_map(|(mut bytes, edits)| {
            for (at, byte, insert) in edits {
                let n = bytes.len();
                if insert || n == 0 {
                    bytes.insert(at % (n + 1), byte);
                } else {
                    bytes[at % n] = byte;
                }
            }
            bytes
        });
    prop_oneof![
        4 => form,
        3 => damaged,
        2 => proptest::collection::vec(any::<u8>(), 0..400),
        // Around the 16 KiB body limit.
        1 => (16_000..16_800usize, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}

fn encode(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|&b| {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_' {
                char::from(b).to_string()
            } else if b == b' ' {
                "+".to_owned()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn probe() -> impl Strategy<Value = Probe> {
    let token = prop_oneof![
        1 => Just(TokenChoice::Real),
        1 => "[A-Za-z0-9_-]{43}".prop_map(TokenChoice::Shaped),
        1 => proptest::collection::vec(any::<u8>(), 0..60).prop_map(TokenChoice::Garbage),
    ];
    let content_type = proptest::option::weighted(
        0.9,
        proptest::sample::select(
            &[
                "application/x-www-form-urlencoded",
                "application/x-www-form-urlencoded; charset=utf-8",
                "application/x-www-form-urlencoded; charset=latin1",
                "Application/X-WWW-Form-Urlencoded",
                "multipart/form-data; boundary=x",
                "text/plain",
                "application/json",
            ][..],
        ),
    );
    let origin = proptest::option::weighted(
        0.2,
        proptest::sample::select(
            &[
                "null",
                "http://evil.test",
                "http://127.0.0.1:1",
                "https://www.example.org",
            ][..],
        ),
    );
    let shaped = || {
        prop_oneof![
            "[A-Za-z0-9_-]{43}".prop_map(TokenChoice::Shaped),
            proptest::collection::vec(any::<u8>(), 0..60).prop_map(TokenChoice::Garbage),
        ]
    };
    let target = prop_oneof![
        3 => Just(Target::Subscribe),
        3 => token.prop_map(Target::Confirm),
        3 => Just(Target::Register),
        1 => (proptest::sample::select(&["confirm", "cancel", "claim"][..]), shaped())
            .prop_map(|(action, t)| Target::RegistrationLink(action, t)),
        1 => shaped().prop_map(Target::MemberLink),
    ];
    (target, content_type, origin, body()).prop_map(|(target, content_type, origin, body)| Probe {
        target,
        content_type,
        origin,
        body,
    })
}

/// A made-up token as it goes into a path (`Real` only means something for `/confirm/`).
fn token_text(t: &TokenChoice) -> String {
    match t {
        TokenChoice::Real => String::new(),
        TokenChoice::Shaped(t) => t.clone(),
        TokenChoice::Garbage(b) => encode(b),
    }
}

async fn send(app: &TestApp, real_link: &str, session: &str, probe: &Probe) -> Result<u16, String> {
    let url = match &probe.target {
        Target::Subscribe => app.url("/subscribe"),
        Target::Confirm(TokenChoice::Real) => real_link.to_owned(),
        Target::Confirm(t) => app.url(&format!("/confirm/{}", token_text(t))),
        Target::Register => app.url(&format!("/trainings/{session}")),
        Target::RegistrationLink(action, t) => {
            app.url(&format!("/registrations/{}/{action}", token_text(t)))
        }
        Target::MemberLink(t) => app.url(&format!(
            "/trainings/{session}/register/1.{}",
            token_text(t)
        )),
    };
    let mut request = app.http.post(&url).body(probe.body.clone());
    if let Some(ct) = probe.content_type {
        request = request.header("content-type", ct);
    }
    if let Some(origin) = probe.origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.map_err(|e| format!("{url}: {e:?}"))?;
    let status = response.status().as_u16();
    // The whole answer arrives, too.
    response
        .bytes()
        .await
        .map_err(|e| format!("{url}: body cut off: {e:?}"))?;
    Ok(status)
}

// proptest's error carries the failing probe, whose size is what makes it a good report.
#[allow(clippy::result_large_err)]
async fn random_form_bodies_never_get_a_5xx(backend: Backend) {
    let app = app(backend)
        .with(|s| s.subscriptions.max_requests_per_ip_per_hour = 1_000_000)
        .spawn()
        .await;
    // A real pending subscriber, so some probes hit a live confirmation link.
    assert_eq!(app.subscribe("jane@x.test", "Jane").await.status(), 200);
    let mail = eventually(20, "confirmation mail", || async {
        app.sink.to("jane@x.test").first().cloned()
    })
    .await;
    let real_link = link_in(&mail.bytes, "/confirm/");
    let calendar = app.settings.calendar().expect("calendar");
    let session = calendar
        .upcoming(chrono::Utc::now(), 1)
        .into_iter()
        .next()
        .expect("an upcoming training")
        .id;

    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    let mut runner = TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let statuses = std::sync::Mutex::new(std::collections::BTreeMap::<u16, u32>::new());
    let started = std::time::Instant::now();
    let result = tokio::task::block_in_place(|| {
        runner.run(&probe(), |probe| {
            let status = handle
                .block_on(send(&app, &real_link, &session, &probe))
                .map_err(TestCaseError::fail)?;
            prop_assert!(status < 500, "{} for {:?}", status, probe);
            *statuses.lock().expect("tally").entry(status).or_default() += 1;
            Ok(())
        })
    });
    if let Err(e) = result {
        panic!("form body: {e}");
    }
    let statuses = statuses.into_inner().expect("tally");
    eprintln!(
        "fuzz form body ({backend:?}): {cases} cases in {:.2?}, answers {statuses:?}",
        started.elapsed()
    );
    // The probes reached the handlers: some subscribed, some were refused as bad input.
    if cases >= 100 {
        for expected in [200, 400] {
            assert!(
                statuses.contains_key(&expected),
                "no {expected}: {statuses:?}"
            );
        }
    }
    // Still serving, and still confirming real links.
    assert_eq!(app.get(&app.url("/healthz")).await.status(), 200);
}
