//! The join-and-leave flow, end to end, and what it refuses.

use chrono::{Duration, Utc};
use harborlist::clock::ManualClock;

use crate::{
    both_backends,
    helpers::{
        Backend, app, eventually, header, html_of, link_in, list_unsubscribe, spawn_app, text_of,
    },
};

both_backends!(
    subscribe_confirm_welcome_one_click_unsubscribe,
    the_answer_is_the_same_whatever_the_address_state,
    bad_addresses_get_422_and_nothing_is_sent,
    line_breaks_in_name_or_address_are_refused,
    html_in_a_name_is_escaped_in_the_html_part,
    expired_used_and_unknown_confirm_links,
    per_address_and_per_ip_rate_limits,
    unsubscribe_links_that_are_unknown,
    the_welcome_names_the_next_training_and_the_reminders_as_configured,
);

/// Confirms `email` and returns its welcome's text and HTML.
async fn welcome_of(app: &crate::helpers::TestApp, email: &str) -> (String, String) {
    assert_eq!(app.subscribe(email, "").await.status(), 200);
    let confirm = app.sink.wait_for(1, 20).await.remove(0);
    let link = link_in(&confirm.bytes, "/confirm/");
    assert_eq!(app.post_empty(&link).await.status(), 200);
    let welcome = app.sink.wait_for(2, 20).await.remove(1);
    (text_of(&welcome.bytes), html_of(&welcome.bytes))
}

async fn the_welcome_names_the_next_training_and_the_reminders_as_configured(backend: Backend) {
    // 2027-01-05: the next training is Wednesday, January 20; March 17 is cancelled later.
    let clock = ManualClock::new("2027-01-05T15:00:00Z".parse().unwrap());
    let app = app(backend).clock(clock.clone()).spawn().await;
    let (text, html) = welcome_of(&app, "ann@example.org").await;
    assert!(
        text.contains("The next training is on Wednesday, January 20, 2027, 11:00 AM – 12:30 PM CST, at LSS/Children's Home Society"),
        "{text}"
    );
    let register = format!("Register: {}/trainings/2027-01-20", app.address);
    assert!(text.contains(&register), "{text}");
    assert!(
        html.contains(&format!("{}/trainings/2027-01-20", app.address)),
        "{html}"
    );
    assert!(
        text.contains("About each training, everyone on the list hears 21 days ahead and those registered get a reminder 2 days before, each with a calendar invitation."),
        "the default [[reminders]], in words: {text}"
    );
    assert!(!text.contains("three weeks"), "nothing hard-coded: {text}");

    // Other reminders, and the January session cancelled: the welcome follows.
    let app = app_with_reminders(backend, clock).await;
    let (text, _) = welcome_of(&app, "bo@example.org").await;
    assert!(
        text.contains("About each training, everyone on the list hears 30 days ahead and those registered get a reminder 1 day before"),
        "{text}"
    );
    assert!(
        text.contains("The next training is on Wednesday, March 17, 2027"),
        "{text}"
    );
}

async fn app_with_reminders(backend: Backend, clock: ManualClock) -> crate::helpers::TestApp {
    app(backend)
        .clock(clock)
        .with(|s| {
            for r in &mut s.reminders {
                r.before = match r.name.as_str() {
                    "invitation" => "30d",
                    _ => "1d",
                }
                .parse()
                .unwrap();
            }
            s.trainings
                .change
                .push(harborlist::calendar::ChangeSettings {
                    date: "2027-01-20".into(),
                    cancelled: Some(true),
                    ..Default::default()
                });
        })
        .spawn()
        .await
}

async fn subscribe_confirm_welcome_one_click_unsubscribe(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app.subscribe("Ann.Lee@Example.org", "Ann Lee").await;
    assert_eq!(res.status(), 200);
    let page = res.text().await.unwrap();
    assert!(page.contains("Check your inbox"), "{page}");
    // subscriptions.confirm_ttl = "72h", in words.
    assert!(page.contains("The link works for 3 days."), "{page}");
    assert_eq!(
        app.status_of("ann.lee@example.org").await.as_deref(),
        Some("pending")
    );

    let confirm = app.sink.wait_for(1, 20).await.remove(0);
    // The domain is stored and sent in its canonical (IDNA, lower-case) form.
    assert_eq!(confirm.to, vec!["Ann.Lee@example.org".to_owned()]);
    assert_eq!(
        header(&confirm.bytes, "List-Unsubscribe"),
        None,
        "a confirmation request is not list mail"
    );
    let link = link_in(&confirm.bytes, "/confirm/");
    assert!(link.starts_with(&app.address), "{link}");

    // A scanner fetching the link changes nothing.
    let page = app.get(&link).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("<form method=\"post\""), "{body}");
    assert_eq!(
        app.status_of("ann.lee@example.org").await.as_deref(),
        Some("pending")
    );

    let done = app.post_empty(&link).await;
    assert_eq!(done.status(), 200);
    assert!(done.text().await.unwrap().contains("re subscribed"));
    assert_eq!(
        app.status_of("ann.lee@example.org").await.as_deref(),
        Some("active")
    );

    let welcome = app.sink.wait_for(2, 20).await.remove(1);
    assert!(text_of(&welcome.bytes).contains("You are now on the"));
    let unsubscribe = list_unsubscribe(&welcome.bytes);
    assert_eq!(
        header(&welcome.bytes, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    assert!(
        text_of(&welcome.bytes).contains(&unsubscribe),
        "visible unsubscribe link in the text part"
    );
    assert!(
        html_of(&welcome.bytes).contains(&unsubscribe),
        "visible unsubscribe link in the HTML part"
    );

    // GET shows a button and changes nothing.
    let page = app.get(&unsubscribe).await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("Unsubscribe</button>"));
    assert_eq!(
        app.status_of("ann.lee@example.org").await.as_deref(),
        Some("active")
    );

    // RFC 8058 one-click, as a mail provider sends it: cross-site, no cookies.
    let one_click = app
        .http
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("origin", "https://mail.provider.example")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(one_click.status(), 200);
    let body = one_click.text().await.unwrap();
    assert!(body.contains("re unsubscribed"));
    assert!(
        body.contains("Subscribe again"),
        "the page offers a way back in"
    );
    assert_eq!(
        app.status_of("ann.lee@example.org").await.as_deref(),
        Some("unsubscribed")
    );

    // Idempotent, and a multipart body works too.
    let again = app
        .http
        .post(&unsubscribe)
        .multipart(reqwest::multipart::Form::new().text("List-Unsubscribe", "One-Click"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        app.status_of("ann.lee@example.org").await.as_deref(),
        Some("unsubscribed")
    );

    // No goodbye by default, and nothing else was sent.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.sink.count(), 2);
}

async fn the_answer_is_the_same_whatever_the_address_state(backend: Backend) {
    let app = spawn_app(backend).await;
    app.subscribe_and_confirm("active@example.org").await;
    app.subscribe("pending@example.org", "").await;
    app.subscribe_and_confirm("left@example.org").await;
    let welcome = app.sink.to("left@example.org").pop().unwrap();
    assert_eq!(
        app.post_empty(&list_unsubscribe(&welcome.bytes))
            .await
            .status(),
        200
    );
    app.sink.wait_for(5, 20).await;
    let sent_before = app.sink.count();

    let mut bodies = Vec::new();
    for email in [
        "new@example.org",
        "pending@example.org",
        "active@example.org",
        "left@example.org",
    ] {
        let res = app.subscribe(email, "").await;
        assert_eq!(res.status(), 200, "{email}");
        bodies.push(res.text().await.unwrap().replace(email, "ADDRESS"));
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "responses differ by state:\n{bodies:#?}"
    );

    // new, pending and unsubscribed get a confirmation; active gets nothing.
    eventually(20, "three confirmations", || async {
        (app.sink.count() >= sent_before + 3).then_some(())
    })
    .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.sink.count(), sent_before + 3);
    assert_eq!(
        app.sink.to("active@example.org").len(),
        2,
        "confirm + welcome only"
    );
    assert_eq!(
        app.status_of("left@example.org").await.as_deref(),
        Some("unsubscribed"),
        "not re-added until confirmed"
    );
}

async fn bad_addresses_get_422_and_nothing_is_sent(backend: Backend) {
    let app = spawn_app(backend).await;
    for (bad, reason) in [
        ("", "Please enter an email address"),
        ("not-an-address", "exactly one @"),
        ("two@@example.org", "exactly one @"),
        ("someone@localhost", "domain name"),
        ("space in@example.org", "contain spaces"),
    ] {
        let res = app.subscribe(bad, "").await;
        assert_eq!(res.status(), 422, "{bad:?}");
        let body = res.text().await.unwrap();
        assert!(
            body.contains(reason),
            "{bad:?}: reason {reason:?} not in page"
        );
    }
    // A body that is not a form at all.
    let res = app
        .http
        .post(app.url("/subscribe"))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.sink.count(), 0);
    assert!(app.store.list_subscribers().await.unwrap().is_empty());
}

async fn line_breaks_in_name_or_address_are_refused(backend: Backend) {
    let app = spawn_app(backend).await;
    let res = app
        .subscribe("victim@example.org\r\nBcc: many@example.org", "")
        .await;
    assert_eq!(res.status(), 422);
    assert!(res.text().await.unwrap().contains("line breaks"));
    let res = app
        .subscribe("ok@example.org", "Ann\r\nBcc: many@example.org")
        .await;
    assert_eq!(res.status(), 422);
    let res = app.subscribe("ok@example.org", "Ann\nSubject: hi").await;
    assert_eq!(res.status(), 422);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(app.sink.count(), 0, "nothing sent");
    assert!(
        app.store.list_subscribers().await.unwrap().is_empty(),
        "nothing stored"
    );
}

async fn html_in_a_name_is_escaped_in_the_html_part(backend: Backend) {
    let app = spawn_app(backend).await;
    let name = "<b>Ann</b> & \"Co\"";
    assert_eq!(app.subscribe("ann@example.org", name).await.status(), 200);
    let confirm = app.sink.wait_for(1, 20).await.remove(0);
    // The name first appears once the address is proved: in the welcome.
    let link = link_in(&confirm.bytes, "/confirm/");
    assert_eq!(app.post_empty(&link).await.status(), 200);
    let msg = app.sink.wait_for(2, 20).await.remove(1);
    let html = html_of(&msg.bytes);
    assert!(
        !html.contains("<b>Ann</b>"),
        "raw HTML from a name reached the HTML part"
    );
    assert!(
        html.contains("&lt;b&gt;Ann&lt;/b&gt; &amp; &quot;Co&quot;"),
        "{html}"
    );
    assert!(
        text_of(&msg.bytes).contains("Hello <b>Ann</b> & \"Co\","),
        "the text part keeps the name as typed"
    );
    let to = crate::helpers::parse(&msg.bytes)
        .to()
        .and_then(|a| a.first())
        .and_then(|a| a.name())
        .map(str::to_owned);
    assert_eq!(to.as_deref(), Some(name), "the To display name round-trips");
}

async fn expired_used_and_unknown_confirm_links(backend: Backend) {
    let clock = ManualClock::new(Utc::now());
    let app = app(backend).clock(clock.clone()).spawn().await;
    app.subscribe("late@example.org", "").await;
    app.subscribe("twice@example.org", "").await;
    let msgs = app.sink.wait_for(2, 20).await;
    let late = link_in(&app.sink.to("late@example.org")[0].bytes, "/confirm/");
    let twice = link_in(&app.sink.to("twice@example.org")[0].bytes, "/confirm/");
    assert_eq!(msgs.len(), 2);

    assert_eq!(app.post_empty(&twice).await.status(), 200);
    let reused = app.post_empty(&twice).await;
    assert_eq!(reused.status(), 410);
    assert!(reused.text().await.unwrap().contains("already been used"));
    assert_eq!(app.get(&twice).await.status(), 410);

    clock.advance(Duration::hours(73));
    let page = app.get(&late).await;
    assert_eq!(page.status(), 410);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("expired") && body.contains("href=\"/\""),
        "clear page with a way to subscribe again"
    );
    assert_eq!(app.post_empty(&late).await.status(), 410);
    assert_eq!(
        app.status_of("late@example.org").await.as_deref(),
        Some("pending")
    );

    let unknown = app.url(&format!("/confirm/{}", "A".repeat(43)));
    assert_eq!(app.get(&unknown).await.status(), 404);
    assert_eq!(app.post_empty(&unknown).await.status(), 404);
    assert_eq!(app.get(&app.url("/confirm/short")).await.status(), 404);
}

async fn per_address_and_per_ip_rate_limits(backend: Backend) {
    let app = app(backend)
        .with(|s| s.subscriptions.max_requests_per_ip_per_hour = 8)
        .spawn()
        .await;
    for i in 1..=3 {
        assert_eq!(
            app.subscribe("flood@example.org", "").await.status(),
            200,
            "request {i}"
        );
    }
    let limited = app.subscribe("FLOOD@example.org", "").await;
    assert_eq!(
        limited.status(),
        429,
        "the 4th request for one address in a day"
    );
    // The same threshold applies to an active address, so a 429 reveals nothing.
    app.subscribe_and_confirm("member@example.org").await;
    app.subscribe("member@example.org", "").await;
    app.subscribe("member@example.org", "").await;
    assert_eq!(app.subscribe("member@example.org", "").await.status(), 429);
    // 8 requests from this IP so far: the next is over the per-IP limit.
    assert_eq!(app.subscribe("other@example.org", "").await.status(), 429);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(
        app.sink.to("flood@example.org").len(),
        3,
        "at most 3 confirmation emails per address per day"
    );
}

async fn unsubscribe_links_that_are_unknown(backend: Backend) {
    let app = spawn_app(backend).await;
    let url = app.url(&format!("/unsubscribe/{}", "B".repeat(43)));
    assert_eq!(app.get(&url).await.status(), 404);
    let res = app.post_empty(&url).await;
    assert_eq!(res.status(), 404);
    assert!(res.text().await.unwrap().contains("This link isn"));
}
