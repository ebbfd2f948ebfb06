//! Behind a real reverse proxy (issue 19, point 7): Debian's nginx with the server block
//! `deploy/nginx/harborlist.conf` documents, over HTTPS with a test certificate, in front
//! of the app with `server.trust_forwarded_for = true` and an https `server.public_url`,
//! as the deployment guide sets them.
//!
//! Visitors are told apart the honest way: each test client connects from its own
//! loopback address (127.0.0.2, 127.0.0.3), so nginx's `$remote_addr` differs per
//! visitor while nginx itself reaches the app from 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr};

use sqlx::Row;

use crate::{
    both_backends,
    helpers::{
        Backend, Nginx, TestApp, app, client_from, documented_server_block, eventually, free_port,
        link_in, list_unsubscribe,
    },
};

both_backends!(
    subscribe_confirm_unsubscribe_work_through_nginx,
    the_per_ip_limit_keys_on_the_visitor_not_the_proxy,
    metrics_are_not_reachable_through_nginx,
    plain_http_redirects_to_https_and_serves_acme_challenges,
);

const VISITOR_A: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
const VISITOR_B: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3));
/// Where nginx connects to the app from: the address the limit must not key on.
const PROXY: &str = "127.0.0.1";

/// The app as the guide configures it, and nginx in front of it.
async fn behind_nginx(backend: Backend, per_ip_per_hour: u32) -> (TestApp, Nginx) {
    let port = free_port();
    let app = app(backend)
        .with(move |s| {
            s.server.trust_forwarded_for = true;
            s.server.public_url = format!("https://127.0.0.1:{port}").parse().expect("url");
            s.subscriptions.max_requests_per_ip_per_hour = per_ip_per_hour;
        })
        .spawn()
        .await;
    let nginx = Nginx::start(port, app.port).await;
    (app, nginx)
}

/// POST /subscribe through nginx from `client`, with an `X-Forwarded-For` of the
/// client's own making if `spoof` is given.
async fn subscribe(
    nginx: &Nginx,
    client: &reqwest::Client,
    email: &str,
    spoof: Option<&str>,
) -> u16 {
    let mut req = client
        .post(nginx.url("/subscribe"))
        .header("origin", nginx.url(""))
        .form(&[("email", email), ("name", "")]);
    if let Some(forged) = spoof {
        req = req.header("x-forwarded-for", forged);
    }
    req.send()
        .await
        .unwrap_or_else(|e| panic!("POST /subscribe through nginx: {e}"))
        .status()
        .as_u16()
}

/// The addresses the app recorded as the requester's and the confirmer's.
async fn recorded_ips(app: &TestApp, email: &str) -> (Option<String>, Option<String>) {
    let row = sqlx::query("SELECT request_ip, confirm_ip FROM subscribers WHERE email_key = $1")
        .bind(email)
        .fetch_one(app.store.pool())
        .await
        .expect("the subscriber row");
    (row.get("request_ip"), row.get("confirm_ip"))
}

async fn subscribe_confirm_unsubscribe_work_through_nginx(backend: Backend) {
    let (app, nginx) = behind_nginx(backend, 10).await;
    let visitor = client_from(VISITOR_A);

    let form = visitor.get(nginx.url("/")).send().await.expect("GET /");
    assert_eq!(form.status(), 200, "{}", nginx.log());
    let hsts: Vec<_> = form
        .headers()
        .get_all("strict-transport-security")
        .iter()
        .collect();
    assert_eq!(hsts, ["max-age=31536000"], "one HSTS header, not two");
    assert!(
        form.headers().contains_key("content-security-policy"),
        "the app's own headers pass through"
    );

    // With the form's own origin (server.public_url), as a browser posts it.
    assert_eq!(
        subscribe(&nginx, &visitor, "ann@example.org", None).await,
        200
    );
    let confirm = eventually(20, "the confirmation mail", || async {
        app.sink.to("ann@example.org").first().cloned()
    })
    .await;
    let link = link_in(&confirm.bytes, "/confirm/");
    assert!(link.starts_with(&nginx.url("/confirm/")), "{link}");
    let page = visitor.get(&link).send().await.expect("GET confirm");
    assert_eq!(page.status(), 200);
    assert_eq!(
        app.status_of("ann@example.org").await.as_deref(),
        Some("pending")
    );
    let done = visitor
        .post(&link)
        .header("origin", nginx.url(""))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("")
        .send()
        .await
        .expect("POST confirm");
    assert_eq!(done.status(), 200);
    assert_eq!(
        app.status_of("ann@example.org").await.as_deref(),
        Some("active")
    );
    assert_eq!(
        recorded_ips(&app, "ann@example.org").await,
        (Some("127.0.0.2".into()), Some("127.0.0.2".into())),
        "the consent record holds the visitor's address, not the proxy's ({PROXY})"
    );

    let welcome = eventually(20, "the welcome mail", || async {
        app.sink.to("ann@example.org").get(1).cloned()
    })
    .await;
    let unsubscribe = list_unsubscribe(&welcome.bytes);
    assert!(
        unsubscribe.starts_with(&nginx.url("/unsubscribe/")),
        "{unsubscribe}"
    );
    // RFC 8058 one-click, as a mail provider posts it from its own servers.
    let one_click = client_from(VISITOR_B)
        .post(&unsubscribe)
        .header("origin", "https://mail.provider.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .expect("one-click POST");
    assert_eq!(one_click.status(), 200);
    assert!(
        one_click
            .text()
            .await
            .expect("body")
            .contains("re unsubscribed")
    );
    assert_eq!(
        app.status_of("ann@example.org").await.as_deref(),
        Some("unsubscribed")
    );
}

async fn the_per_ip_limit_keys_on_the_visitor_not_the_proxy(backend: Backend) {
    let (app, nginx) = behind_nginx(backend, 2).await;
    let a = client_from(VISITOR_A);
    let b = client_from(VISITOR_B);

    assert_eq!(subscribe(&nginx, &a, "a1@example.org", None).await, 200);
    assert_eq!(subscribe(&nginx, &a, "a2@example.org", None).await, 200);
    assert_eq!(
        subscribe(&nginx, &a, "a3@example.org", None).await,
        429,
        "visitor A is over its limit of 2 an hour"
    );
    // A header of A's own making does not get it out: nginx appends the address A
    // connected from, and that right-most entry is the one the app takes.
    for forged in ["198.51.100.7", "198.51.100.8, 198.51.100.9", "127.0.0.3"] {
        assert_eq!(
            subscribe(&nginx, &a, "a4@example.org", Some(forged)).await,
            429,
            "A spoofing X-Forwarded-For: {forged}"
        );
    }
    // B comes through the same proxy and still has its own allowance, made-up header
    // or not; were the limit keyed on the proxy (127.0.0.1), B would be refused.
    assert_eq!(
        subscribe(&nginx, &b, "b1@example.org", Some("198.51.100.7")).await,
        200,
        "visitor B is not limited by A's requests"
    );
    assert_eq!(subscribe(&nginx, &b, "b2@example.org", None).await, 200);
    assert_eq!(subscribe(&nginx, &b, "b3@example.org", None).await, 429);

    for (email, seen) in [
        ("a1@example.org", "127.0.0.2"),
        ("a2@example.org", "127.0.0.2"),
        ("b1@example.org", "127.0.0.3"),
        ("b2@example.org", "127.0.0.3"),
    ] {
        assert_eq!(
            recorded_ips(&app, email).await.0.as_deref(),
            Some(seen),
            "the app saw {email}'s request from the visitor's address"
        );
    }
    for refused in ["a3@example.org", "a4@example.org", "b3@example.org"] {
        assert_eq!(app.status_of(refused).await, None, "{refused} was refused");
    }
}

async fn metrics_are_not_reachable_through_nginx(backend: Backend) {
    let (app, nginx) = behind_nginx(backend, 10).await;
    let visitor = client_from(VISITOR_A);
    // Spellings nginx takes for /metrics; each is answered by nginx itself (no CSP, which
    // every answer of the app carries), so none reaches the app.
    for path in ["/metrics", "/metrics?name[]=x", "//metrics", "/%6Detrics"] {
        let res = visitor.get(nginx.url(path)).send().await.expect("GET");
        assert_eq!(res.status(), 404, "{path} through nginx");
        assert!(
            !res.headers().contains_key("content-security-policy"),
            "{path} was answered by nginx, not passed on"
        );
        assert_eq!(
            res.headers()["strict-transport-security"],
            "max-age=31536000",
            "nginx's own answers carry HSTS too"
        );
    }
    assert_eq!(
        visitor
            .get(nginx.url("/metrics/"))
            .send()
            .await
            .expect("GET")
            .status(),
        404,
        "the app's public port has no metrics either"
    );

    let private = app.metrics_url.as_deref().expect("metrics are on");
    let res = app.get(private).await;
    assert_eq!(res.status(), 200, "the private listener still serves them");
    assert!(res.text().await.expect("body").contains("harborlist_"));

    // The documented block proxies to server.bind's default only, never to metrics_bind.
    let defaults = harborlist::config::load_from(std::path::Path::new("config"), None)
        .expect("default config loads");
    let block = documented_server_block();
    let upstreams: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter_map(|l| l.strip_prefix("proxy_pass "))
        .collect();
    assert_eq!(
        upstreams,
        [format!("http://{};", defaults.server.bind)],
        "one upstream: harborlist's public listener"
    );
    let metrics_port = defaults
        .server
        .metrics_bind
        .rsplit(':')
        .next()
        .expect("a port");
    let directives: Vec<&str> = block
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(
        directives.iter().all(|l| !l.contains(metrics_port)),
        "no directive mentions the metrics port {metrics_port}"
    );
}

async fn plain_http_redirects_to_https_and_serves_acme_challenges(backend: Backend) {
    let (_app, nginx) = behind_nginx(backend, 10).await;
    let visitor = client_from(VISITOR_A);
    let res = visitor
        .get(nginx.http_url("/subscribe?from=flyer"))
        .send()
        .await
        .expect("GET over plain HTTP");
    assert_eq!(res.status(), 301);
    assert_eq!(
        res.headers()["location"],
        "https://127.0.0.1/subscribe?from=flyer",
        "to the same page over HTTPS (on 443; the test's port differs)"
    );

    // certbot's webroot challenge: the file it writes is served as is, over plain HTTP.
    let token = "evaGxfADs6pSRb2LAv9IZf17Dt3juxGJ-PCt92wr-oA";
    let dir = nginx.webroot().join(".well-known/acme-challenge");
    std::fs::write(dir.join(token), "evaGxfADs6pSRb2LAv9IZ.key").expect("challenge file");
    let challenge = visitor
        .get(nginx.http_url(&format!("/.well-known/acme-challenge/{token}")))
        .send()
        .await
        .expect("GET challenge");
    assert_eq!(challenge.status(), 200, "{}", nginx.log());
    assert_eq!(
        challenge.text().await.expect("body"),
        "evaGxfADs6pSRb2LAv9IZ.key"
    );
    let missing = visitor
        .get(nginx.http_url("/.well-known/acme-challenge/unknown"))
        .send()
        .await
        .expect("GET unknown challenge");
    assert_eq!(missing.status(), 404, "no redirect for a missing challenge");
}

/// The guide shows the server block in full: it must be the file the tests run (after
/// the file's opening comment, which points back at the guide).
#[test]
fn the_deployment_guide_shows_the_tested_server_block() {
    let block = documented_server_block();
    let (_, body) = block
        .split_once("\n\n")
        .expect("an opening comment, then the block");
    let shown: String = body
        .lines()
        .map(|l| {
            if l.is_empty() {
                "\n".to_owned()
            } else {
                format!("   {l}\n")
            }
        })
        .collect();
    let guide = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/README.md"))
        .expect("deploy/README.md");
    assert!(
        guide.contains(&format!("   ```nginx\n{shown}   ```\n")),
        "deploy/README.md step 6 must show deploy/nginx/harborlist.conf as it is"
    );
}
