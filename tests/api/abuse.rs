//! The public form against outsiders (issue 16): one mailbox is one address with one limit,
//! the limit holds under concurrency (on PostgreSQL across two instances), a request never
//! renames anyone, and a confirmation carries nothing the requester typed.

use crate::{
    both_backends,
    helpers::{Backend, TestApp, app, eventually, header, link_in, text_of},
};

both_backends!(
    spellings_of_one_mailbox_share_one_key_and_one_limit,
    a_look_alike_spelling_does_not_capture_the_real_address,
    concurrent_requests_for_one_address_hold_the_limit,
    a_request_does_not_rename_a_pending_subscriber,
    names_that_disguise_text_are_refused,
    cross_site_form_posts_are_refused_and_store_nothing,
    every_answer_carries_the_security_headers,
    answers_hyper_gives_by_itself_carry_the_headers_too,
);

/// POST /subscribe as if from `ip`, behind a proxy that sets X-Forwarded-For.
async fn subscribe_from(app: &TestApp, ip: &str, email: &str, name: &str) -> u16 {
    app.http
        .post(app.url("/subscribe"))
        .header("x-forwarded-for", ip)
        .form(&[("email", email), ("name", name)])
        .send()
        .await
        .expect("POST /subscribe")
        .status()
        .as_u16()
}

async fn behind_proxy(backend: Backend) -> TestApp {
    app(backend)
        .with(|s| s.server.trust_forwarded_for = true)
        .spawn()
        .await
}

async fn spellings_of_one_mailbox_share_one_key_and_one_limit(backend: Backend) {
    let app = behind_proxy(backend).await;
    let spellings = [
        "\"victim\"@x.test",
        "\"\\v\\i\\c\\t\\i\\m\"@x.test",
        "VICTIM@X.TEST",
        "ｖｉｃｔｉｍ@x.test",
        "victim＠x.test",
        "victim@ｘ.test",
    ];
    let mut answers = Vec::new();
    for (i, spelling) in spellings.iter().enumerate() {
        answers.push(subscribe_from(&app, &format!("198.51.100.{}", i + 1), spelling, "").await);
    }
    assert_eq!(
        answers,
        [200, 200, 200, 429, 429, 429],
        "one limit for all spellings"
    );
    let arrived = eventually(20, "three confirmations", || async {
        let to = app.sink.to("victim@x.test");
        (to.len() >= 3).then_some(to)
    })
    .await;
    for m in &arrived {
        assert_eq!(
            m.to,
            ["victim@x.test"],
            "the envelope carries the canonical address"
        );
    }
    let subscribers = app.store.list_subscribers().await.expect("list");
    assert_eq!(subscribers.len(), 1, "one subscriber row for one mailbox");
    assert_eq!(subscribers[0].email, "victim@x.test");
    let quoted = subscribe_from(&app, "198.51.100.9", "\"john smith\"@x.test", "").await;
    assert_eq!(
        quoted, 422,
        "a quoted form no plain address can say is refused"
    );
    let non_ascii = app
        .http
        .post(app.url("/subscribe"))
        .header("x-forwarded-for", "198.51.100.10")
        .form(&[("email", "jöran@x.test"), ("name", "")])
        .send()
        .await
        .expect("POST");
    assert_eq!(non_ascii.status(), 422);
    let page = non_ascii.text().await.expect("body");
    assert!(
        page.contains("plain letters"),
        "a plain-language reason: {page}"
    );
}

async fn a_look_alike_spelling_does_not_capture_the_real_address(backend: Backend) {
    let app = behind_proxy(backend).await;
    // KELVIN SIGN, then the real spelling: both are kate@x.test, delivered as such.
    assert_eq!(
        subscribe_from(&app, "198.51.100.1", "\u{212A}ate@x.test", "").await,
        200
    );
    assert_eq!(
        subscribe_from(&app, "198.51.100.2", "kate@x.test", "").await,
        200
    );
    let arrived = eventually(20, "both confirmations", || async {
        let to = app.sink.to("kate@x.test");
        (to.len() >= 2).then_some(to)
    })
    .await;
    for m in &arrived {
        // NFKC folds the Kelvin sign into a plain K: a spelling any relay delivers to
        // the same mailbox (local parts are matched regardless of case in practice).
        assert_eq!(m.to.len(), 1);
        assert!(m.to[0].is_ascii(), "{:?}", m.to);
        assert!(m.to[0].eq_ignore_ascii_case("kate@x.test"), "{:?}", m.to);
    }
    let link = link_in(&arrived[1].bytes, "/confirm/");
    assert_eq!(app.post_empty(&link).await.status(), 200);
    assert_eq!(
        app.status_of("kate@x.test").await.as_deref(),
        Some("active")
    );
}

async fn concurrent_requests_for_one_address_hold_the_limit(backend: Backend) {
    let first = behind_proxy(backend).await;
    // On PostgreSQL the requests are split over two instances on one database.
    let second = match backend {
        Backend::Postgres => Some(first.sibling().await),
        Backend::Sqlite => None,
    };
    let requests = (0..20).map(|i| {
        let app = match (&second, i % 2) {
            (Some(other), 1) => other,
            _ => &first,
        };
        let ip = format!("203.0.113.{}", i + 1);
        async move { subscribe_from(app, &ip, "rush@example.org", "").await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let ok = answers.iter().filter(|s| **s == 200).count();
    let limited = answers.iter().filter(|s| **s == 429).count();
    let max = first.settings.subscriptions.max_confirmations_per_day as usize;
    assert_eq!((ok, limited), (max, 20 - max), "{answers:?}");
    // Exactly one confirmation was queued per accepted request, so no more can arrive.
    let queued: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM mailings WHERE kind = 'confirm'")
        .fetch_one(first.store.pool())
        .await
        .expect("count");
    assert_eq!(queued as usize, max);
    eventually(20, "the confirmations", || async {
        (first.sink.to("rush@example.org").len() == max).then_some(())
    })
    .await;
}

async fn a_request_does_not_rename_a_pending_subscriber(backend: Backend) {
    let app = behind_proxy(backend).await;
    assert_eq!(
        subscribe_from(&app, "198.51.100.1", "jane@example.org", "Jane Doe").await,
        200
    );
    // Jane's own confirmation arrives before the attacker asks, so the first mail is hers
    // (two queued at once may be sent by two connections in either order).
    eventually(20, "Jane's confirmation", || async {
        (!app.sink.to("jane@example.org").is_empty()).then_some(())
    })
    .await;
    assert_eq!(
        subscribe_from(
            &app,
            "198.51.100.66",
            "jane@example.org",
            "Attacker Chosen Name"
        )
        .await,
        200
    );
    let confirmations = eventually(20, "both confirmations", || async {
        let to = app.sink.to("jane@example.org");
        (to.len() >= 2).then_some(to)
    })
    .await;
    for m in &confirmations {
        let to = header(&m.bytes, "To").expect("To");
        assert_eq!(
            to, "jane@example.org",
            "no display name to an unproved address"
        );
        let text = text_of(&m.bytes);
        assert!(
            !text.contains("Jane Doe") && !text.contains("Attacker"),
            "{text}"
        );
    }
    // Jane clicks the link from her own request: hers is the name kept.
    let mine = confirmations
        .iter()
        .map(|m| link_in(&m.bytes, "/confirm/"))
        .next()
        .expect("a link");
    assert_eq!(app.post_empty(&mine).await.status(), 200);
    let welcome = eventually(20, "the welcome", || async {
        app.sink.to("jane@example.org").get(2).cloned()
    })
    .await;
    let to = header(&welcome.bytes, "To").expect("To");
    assert!(to.contains("Jane Doe") && !to.contains("Attacker"), "{to}");
    let stored = app.store.list_subscribers().await.expect("list");
    assert_eq!(stored[0].name.as_deref(), Some("Jane Doe"));
}

async fn names_that_disguise_text_are_refused(backend: Backend) {
    let app = behind_proxy(backend).await;
    for name in [
        "Ann \u{202E}moc.live",
        "Ann\u{2028}Click here",
        "\u{2066}Ann",
    ] {
        assert_eq!(
            subscribe_from(&app, "198.51.100.3", "ann@example.org", name).await,
            422,
            "{name:?}"
        );
    }
    assert!(app.store.list_subscribers().await.expect("list").is_empty());
}

async fn post_with(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = app
        .http
        .post(app.url(path))
        .form(&[("email", "cross@example.org"), ("name", "")]);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("POST").status().as_u16()
}

async fn cross_site_form_posts_are_refused_and_store_nothing(backend: Backend) {
    let app = app(backend)
        .with(|s| s.server.form_origins = vec!["https://www.example.org".into()])
        .spawn()
        .await;
    assert_eq!(
        post_with(&app, "/subscribe", &[("sec-fetch-site", "cross-site")]).await,
        403
    );
    assert_eq!(
        post_with(&app, "/subscribe", &[("origin", "https://evil.test")]).await,
        403
    );
    assert_eq!(
        post_with(
            &app,
            "/subscribe",
            &[("origin", "null"), ("sec-fetch-site", "cross-site")]
        )
        .await,
        403,
        "a sandboxed frame on another site"
    );
    assert_eq!(
        post_with(&app, "/confirm/abc", &[("origin", "https://evil.test")]).await,
        403
    );
    assert!(
        app.store.list_subscribers().await.expect("list").is_empty(),
        "nothing stored"
    );
    // RFC 8058 one-click comes from the mail provider's origin: never refused here.
    let one_click = post_with(
        &app,
        "/unsubscribe/unknown",
        &[("origin", "https://mail.example")],
    )
    .await;
    assert_ne!(one_click, 403);
    // Our own pages, an allowed embedding site, and clients that send neither header.
    let ours = app.address.clone();
    assert_eq!(
        post_with(
            &app,
            "/subscribe",
            &[("origin", &ours), ("sec-fetch-site", "same-origin")]
        )
        .await,
        200
    );
    assert_eq!(
        post_with(&app, "/subscribe", &[("origin", "https://www.example.org")]).await,
        200
    );
    assert_eq!(post_with(&app, "/subscribe", &[]).await, 200);
    // Our own pages say Referrer-Policy: no-referrer, so browsers post their forms with
    // `Origin: null`; Sec-Fetch-Site says where they really came from.
    let from_our_page = app
        .http
        .post(app.url("/subscribe"))
        .header("origin", "null")
        .header("sec-fetch-site", "same-origin")
        .form(&[("email", "own-page@example.org"), ("name", "")])
        .send()
        .await
        .expect("POST");
    assert_eq!(from_our_page.status(), 200);
}

async fn every_answer_carries_the_security_headers(backend: Backend) {
    let app = app(backend)
        .with(|s| {
            s.server.public_url = "https://trainings.example.org".parse().expect("url");
            s.subscriptions.max_requests_per_ip_per_hour = 1;
        })
        .spawn()
        .await;
    let check = |what: &str, res: &reqwest::Response| {
        let h = res.headers();
        for name in [
            "content-security-policy",
            "x-content-type-options",
            "referrer-policy",
            "strict-transport-security",
        ] {
            assert!(
                h.contains_key(name),
                "{what} ({}) lacks {name}",
                res.status()
            );
        }
        let csp = h["content-security-policy"].to_str().expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        let hsts = h["strict-transport-security"].to_str().expect("ascii");
        let age: u64 = hsts
            .trim_start_matches("max-age=")
            .split(';')
            .next()
            .and_then(|n| n.parse().ok())
            .expect("max-age");
        assert!(age >= 31_536_000, "{hsts}");
    };
    let ok = app.get(&app.url("/")).await;
    assert_eq!(ok.status(), 200);
    check("the form", &ok);
    let missing = app.get(&app.url("/no/such/page")).await;
    assert_eq!(missing.status(), 404);
    check("a 404", &missing);
    // Its own client: the server closes a connection whose body it refused unread.
    let huge = reqwest::Client::new()
        .post(app.url("/subscribe"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("email={}", "a".repeat(64 * 1024)))
        .send()
        .await
        .expect("POST");
    assert_eq!(huge.status(), 413);
    check("a 413", &huge);
    assert_eq!(app.subscribe("one@example.org", "").await.status(), 200);
    let limited = app.subscribe("two@example.org", "").await;
    assert_eq!(limited.status(), 429);
    check("a 429", &limited);
    let retry: u64 = limited.headers()["retry-after"]
        .to_str()
        .ok()
        .and_then(|s| s.parse().ok())
        .expect("Retry-After in seconds");
    assert!(retry > 0);
}

/// The head of what the server answers to `request`, sent raw.
async fn raw_answer(app: &TestApp, request: &[u8]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut conn = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .expect("connect");
    let _ = conn.write_all(request).await;
    let mut got = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        conn.read_to_end(&mut got),
    )
    .await
    .expect("the server answers and closes");
    let text = String::from_utf8_lossy(&got).into_owned();
    text.split("\r\n\r\n")
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

async fn answers_hyper_gives_by_itself_carry_the_headers_too(backend: Backend) {
    let app = app(backend)
        .with(|s| s.server.public_url = "https://trainings.example.org".parse().expect("url"))
        .spawn()
        .await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    let garbage = b"NOT AN HTTP REQUEST AT ALL\r\n\r\n".to_vec();
    for (what, request, status) in [
        ("headers too large", huge.into_bytes(), "431"),
        ("an unparseable request", garbage, "400"),
    ] {
        let head = raw_answer(&app, &request).await;
        assert!(
            head.starts_with(&format!("http/1.1 {status}")),
            "{what}: {head}"
        );
        for name in [
            "content-security-policy: default-src 'none'",
            "x-content-type-options: nosniff",
            "referrer-policy: no-referrer",
            "strict-transport-security: max-age=31536000",
        ] {
            assert!(head.contains(name), "{what} lacks {name}: {head}");
        }
    }
    // Answers the service gives itself are not patched twice.
    let own = raw_answer(
        &app,
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(own.matches("content-security-policy").count(), 1, "{own}");
}

/// Item 10: settings dumps (`Debug`, `Serialize`) and the parsed relay never show a secret.
#[test]
fn secrets_never_show_in_debug_or_serialized_settings() {
    let mut s = crate::helpers::test_settings("sqlite://unused.db", 2525);
    s.mail.smtp_url = Some("smtp://mailer:hunter2-pw@relay.example.org:587?tls=required".into());
    let key = harborlist::domain::TokenKey::generate_text();
    s.security.token_key = Some(key.clone().into());
    s.security.previous_token_keys = vec![harborlist::config::PreviousTokenKey {
        key: Some("b2xkLWtleS1vbGQta2V5LW9sZC1rZXktb2xkLWtleQ==".into()),
        file: None,
    }];
    let debug = format!("{s:?}");
    let json = serde_json::to_string(&s).expect("settings serialize");
    for dump in [&debug, &json] {
        assert!(
            !dump.contains("hunter2"),
            "the relay password leaked: {dump}"
        );
        assert!(!dump.contains(&key), "the token key leaked");
        assert!(
            !dump.contains("b2xkLWtleS1vbGQta2V5"),
            "a previous key leaked"
        );
        assert!(dump.contains("[redacted]"));
    }
    let relay = harborlist::mail::smtp::Relay::parse(s.mail.relay_url()).expect("parses");
    assert!(!format!("{relay:?}").contains("hunter2"), "{relay:?}");
}
