//! Registration end to end, against the real SMTP server: the public form and its mail
//! link, the training filling up and the waiting list, giving up, offers and claims, an
//! offer running out, the close, and the one answer the form gives whatever the state.

use chrono::{DateTime, Duration, Utc};
use harborlist::{clock::ManualClock, domain::TokenKey, store::registrations::RegStatus};

use crate::{
    both_backends,
    helpers::{
        Backend, SESSION, calendar_part, header, html_of, reg_app, reg_link, seed, subject,
        text_of, unescape,
    },
};

both_backends!(
    public_registration_goes_through_the_mail_link,
    the_training_fills_up_and_the_waiting_list_takes_the_rest,
    a_seat_given_up_is_offered_to_the_next_and_claimed,
    an_offer_that_runs_out_passes_to_the_next_person,
    nothing_is_registered_offered_or_claimed_after_the_close,
    the_form_answers_the_same_page_whatever_the_state,
    unknown_sessions_and_links_get_a_clear_page,
    cancelled_and_external_sessions_take_no_registrations
);

/// `check` renders the session page in every availability and composes each registration
/// mail, so a template that breaks them is refused before it goes live.
#[test]
fn check_covers_the_registration_pages_and_mail() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_harborlist"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .arg("check")
        .output()
        .unwrap();
    crate::helpers::assert_success(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in [
        "ok   web page training",
        "ok   web page trainings",
        "ok   email template registration_confirm",
        "ok   email template registered",
        "ok   email template waitlisted",
        "ok   email template seat_offer",
    ] {
        assert!(
            stdout.lines().any(|l| l.trim_end() == line),
            "{line} in:\n{stdout}"
        );
    }
}

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

/// Ten days before the first session: registration is open.
const BEFORE: &str = "2027-01-10T12:00:00Z";

async fn public_registration_goes_through_the_mail_link(backend: Backend) {
    let app = reg_app(backend, 3).spawn().await;
    let list = app.page_text(&app.url("/trainings")).await;
    assert!(
        list.contains(&format!("href=\"/trainings/{SESSION}\"")),
        "{list}"
    );
    assert!(list.contains("3 seats left"), "{list}");
    let page = app.get(&app.url(&format!("/trainings/{SESSION}"))).await;
    assert_eq!(page.status(), 200);
    let page = page.text().await.map(unescape).unwrap();
    for field in [
        "name=\"email\"",
        "name=\"name\"",
        "name=\"organisation\"",
        "name=\"news\"",
    ] {
        assert!(page.contains(field), "{field} in {page}");
    }
    assert!(!page.contains("checked"), "the news box starts unticked");
    assert!(page.contains("Wednesday, January 20, 2027"), "{page}");

    let r = app
        .register(SESSION, "ann@example.org", "Ann Lee", "YouthLink", false)
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.text()
            .await
            .map(unescape)
            .unwrap()
            .contains("Check your inbox")
    );
    let mail = app
        .wait_mail("ann@example.org", "Please confirm your registration", 1)
        .await;
    assert!(
        header(&mail.bytes, "List-Unsubscribe").is_none(),
        "registration mail is transactional"
    );
    assert!(header(&mail.bytes, "List-Id").is_none());
    assert!(!text_of(&mail.bytes).to_lowercase().contains("unsubscribe"));
    assert!(html_of(&mail.bytes).contains("/confirm\""));
    let link = reg_link(&mail.bytes, "confirm");

    // GET shows one form and changes nothing.
    let get = app.get(&link).await;
    assert_eq!(get.status(), 200);
    let body = get.text().await.map(unescape).unwrap();
    let path = link.trim_start_matches(&app.address);
    assert_eq!(body.matches("<form").count(), 1);
    assert!(body.contains(&format!("action=\"{path}\"")), "{body}");
    assert_eq!(
        app.reg_status("ann@example.org").await,
        Some(RegStatus::Pending)
    );

    let post = app.post_empty(&link).await;
    assert_eq!(post.status(), 200);
    assert!(
        post.text()
            .await
            .map(unescape)
            .unwrap()
            .contains("You're registered")
    );
    assert_eq!(
        app.reg_status("ann@example.org").await,
        Some(RegStatus::Registered)
    );
    let registered = app
        .wait_mail("ann@example.org", "You're registered", 1)
        .await;
    assert!(header(&registered.bytes, "List-Unsubscribe").is_none());
    let ics = calendar_part(&registered.bytes).expect("the .ics");
    let calendar = app.settings.calendar().unwrap();
    let session = calendar.session_by_id(SESSION).unwrap();
    assert!(ics.contains(&format!("UID:{}", session.uid)), "{ics}");
    assert!(ics.contains("SEQUENCE:0"), "{ics}");
    assert!(text_of(&registered.bytes).contains("Give up your seat"));
    reg_link(&registered.bytes, "cancel");

    // Registering is not subscribing (someone who only registered is no list member, so
    // `subscribers list` leaves them out), and the evidence is kept.
    assert_eq!(app.status_of("ann@example.org").await, None);
    assert!(
        app.sink
            .to("ann@example.org")
            .iter()
            .all(|m| !subject(&m.bytes).contains("subscription"))
    );
    let row = &app.store.registrations_for(SESSION).await.unwrap()[0];
    assert_eq!(row.name.as_deref(), Some("Ann Lee"));
    assert_eq!(row.organisation.as_deref(), Some("YouthLink"));
    use sqlx::Row;
    let evidence =
        sqlx::query("SELECT confirm_ip, confirm_user_agent, request_ip FROM registrations")
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    assert_eq!(
        evidence.get::<Option<String>, _>("confirm_ip").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(
        evidence.get::<Option<String>, _>("request_ip").as_deref(),
        Some("127.0.0.1")
    );

    // A second press of the button changes nothing.
    let again = app.post_text(&link).await;
    assert!(again.contains("You're registered"));
    assert_eq!(
        app.mails_like("ann@example.org", "You're registered").len(),
        1
    );

    // Ticking "news" also starts the list's double opt-in.
    let r = app.register(SESSION, "bo@example.org", "", "", true).await;
    assert_eq!(r.status(), 200);
    app.wait_mail("bo@example.org", "Please confirm your registration", 1)
        .await;
    app.wait_mail("bo@example.org", "Please confirm your subscription", 1)
        .await;

    // Bad input: a 422 page with the reason, the form kept.
    let bad = app
        .register(SESSION, "not an address", "", "Org", false)
        .await;
    assert_eq!(bad.status(), 422);
    let bad = bad.text().await.map(unescape).unwrap();
    assert!(
        bad.contains("role=\"alert\"") && bad.contains("value=\"Org\""),
        "{bad}"
    );
}

async fn the_training_fills_up_and_the_waiting_list_takes_the_rest(backend: Backend) {
    let app = reg_app(backend, 2).spawn().await;
    for email in ["a@example.org", "b@example.org"] {
        assert!(
            app.register_and_confirm(email)
                .await
                .contains("You're registered")
        );
    }
    let list = app.page_text(&app.url("/trainings")).await;
    assert!(list.contains("Full: join the waiting list"), "{list}");
    let page = app
        .page_text(&app.url(&format!("/trainings/{SESSION}")))
        .await;
    assert!(
        page.contains("Full: you'll join the waiting list"),
        "{page}"
    );
    for (n, email) in [(1, "c@example.org"), (2, "d@example.org")] {
        let body = app.register_and_confirm(email).await;
        assert!(
            body.contains(&format!("You're on the waiting list, number {n}")),
            "{body}"
        );
        let mail = app.wait_mail(email, "You're on the waiting list", 1).await;
        assert!(
            subject(&mail.bytes).contains(&format!("number {n}")),
            "{}",
            subject(&mail.bytes)
        );
        assert!(
            calendar_part(&mail.bytes).is_none(),
            "no .ics without a seat"
        );
        assert!(text_of(&mail.bytes).contains("Leave the waiting list"));
        reg_link(&mail.bytes, "cancel");
    }
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Waitlisted)
    );

    // d leaves the waiting list: the page asks first, then it is done.
    let mail = app
        .wait_mail("d@example.org", "You're on the waiting list", 1)
        .await;
    let leave = reg_link(&mail.bytes, "cancel");
    let ask = app.page_text(&leave).await;
    assert!(ask.contains("Leave the waiting list?"), "{ask}");
    assert!(
        ask.contains("You're number 2 on the waiting list."),
        "{ask}"
    );
    assert_eq!(
        app.reg_status("d@example.org").await,
        Some(RegStatus::Waitlisted)
    );
    let done = app.post_text(&leave).await;
    assert!(done.contains("You've left the waiting list"), "{done}");
    assert_eq!(
        app.reg_status("d@example.org").await,
        Some(RegStatus::Cancelled)
    );
}

async fn a_seat_given_up_is_offered_to_the_next_and_claimed(backend: Backend) {
    let app = reg_app(backend, 1).spawn().await;
    app.register_and_confirm("a@example.org").await;
    app.register_and_confirm("b@example.org").await;
    app.register_and_confirm("c@example.org").await;
    let registered = app.wait_mail("a@example.org", "You're registered", 1).await;
    let give_up = reg_link(&registered.bytes, "cancel");
    let ask = app.page_text(&give_up).await;
    assert!(ask.contains("Give up your seat?"), "{ask}");
    let done = app.post_text(&give_up).await;
    assert!(done.contains("You've given up your seat"), "{done}");

    let offer = app
        .wait_mail("b@example.org", "A seat is yours if you claim it by", 1)
        .await;
    assert!(
        subject(&offer.bytes).contains("2027") || subject(&offer.bytes).contains("at "),
        "{}",
        subject(&offer.bytes)
    );
    assert_eq!(
        app.reg_status("b@example.org").await,
        Some(RegStatus::Offered)
    );
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Waitlisted)
    );
    assert!(
        app.mails_like("c@example.org", "A seat is yours")
            .is_empty()
    );
    reg_link(&offer.bytes, "cancel");
    let claim = reg_link(&offer.bytes, "claim");
    let ask = app.page_text(&claim).await;
    assert!(ask.contains("Claim your seat"), "{ask}");
    assert_eq!(
        app.reg_status("b@example.org").await,
        Some(RegStatus::Offered)
    );
    let done = app.post_text(&claim).await;
    assert!(done.contains("You're registered"), "{done}");
    assert_eq!(
        app.reg_status("b@example.org").await,
        Some(RegStatus::Registered)
    );
    let mail = app.wait_mail("b@example.org", "You're registered", 1).await;
    assert!(calendar_part(&mail.bytes).is_some_and(|ics| ics.contains("SEQUENCE:0")));
    // Giving the seat up again is idempotent on the first person's link.
    let again = app.post_empty(&give_up).await;
    assert_eq!(again.status(), 200);
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Waitlisted)
    );
}

async fn an_offer_that_runs_out_passes_to_the_next_person(backend: Backend) {
    let clock = ManualClock::new(at(BEFORE));
    let app = reg_app(backend, 1).clock(clock.clone()).spawn().await;
    for email in ["a@example.org", "b@example.org", "c@example.org"] {
        app.register_and_confirm(email).await;
    }
    let registered = app.wait_mail("a@example.org", "You're registered", 1).await;
    app.post_empty(&reg_link(&registered.bytes, "cancel")).await;
    let offer = app.wait_mail("b@example.org", "A seat is yours", 1).await;
    // 48 hours from now, in the trainings' zone.
    assert!(
        subject(&offer.bytes).contains("Tuesday, January 12 at 6:00 AM CST"),
        "{}",
        subject(&offer.bytes)
    );

    clock.advance(Duration::hours(49));
    let made = app
        .store
        .refill(&app.seats(), app.clock.now().timestamp_millis())
        .await
        .unwrap();
    assert_eq!(made, 1);
    assert_eq!(
        app.reg_status("b@example.org").await,
        Some(RegStatus::Expired)
    );
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Offered)
    );
    app.wait_mail("c@example.org", "A seat is yours", 1).await;
    let late = app.post_empty(&reg_link(&offer.bytes, "claim")).await;
    assert_eq!(late.status(), 410);
    assert!(
        late.text()
            .await
            .map(unescape)
            .unwrap()
            .contains("This offer has expired")
    );

    // c declines: nobody is left to offer it to.
    let offer = app.wait_mail("c@example.org", "A seat is yours", 1).await;
    let decline = reg_link(&offer.bytes, "cancel");
    assert!(app.page_text(&decline).await.contains("Decline the seat?"));
    let done = app.post_text(&decline).await;
    assert!(done.contains("You've declined the seat"), "{done}");
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Cancelled)
    );
    let counts = app.store.seat_counts().await.unwrap();
    assert_eq!(counts.get(SESSION).map_or(0, |c| c.taken()), 0);
}

async fn nothing_is_registered_offered_or_claimed_after_the_close(backend: Backend) {
    let clock = ManualClock::new(at(BEFORE));
    let app = reg_app(backend, 1).clock(clock.clone()).spawn().await;
    app.register_and_confirm("a@example.org").await;
    app.register_and_confirm("b@example.org").await;
    app.register_and_confirm("c@example.org").await;
    assert_eq!(
        app.register(SESSION, "p@example.org", "", "", false)
            .await
            .status(),
        200
    );
    let pending = app
        .wait_mail("p@example.org", "Please confirm your registration", 1)
        .await;
    // a gives up before the close: b holds an offer.
    let registered = app.wait_mail("a@example.org", "You're registered", 1).await;
    app.post_empty(&reg_link(&registered.bytes, "cancel")).await;
    let offer = app.wait_mail("b@example.org", "A seat is yours", 1).await;

    // The start is 17:00 UTC; registration closes two hours before.
    clock.set(at("2027-01-20T15:00:00Z"));
    let list = app.page_text(&app.url("/trainings")).await;
    assert!(list.contains("Registration closed"), "{list}");
    let page = app
        .page_text(&app.url(&format!("/trainings/{SESSION}")))
        .await;
    assert!(
        page.contains("Registration for this training has closed") && !page.contains("<form"),
        "{page}"
    );
    assert_eq!(
        app.register(SESSION, "late@example.org", "", "", false)
            .await
            .status(),
        409
    );
    let confirm = app.post_empty(&reg_link(&pending.bytes, "confirm")).await;
    assert_eq!(confirm.status(), 410);
    assert_eq!(
        app.reg_status("p@example.org").await,
        Some(RegStatus::Pending)
    );
    let claim = app.post_empty(&reg_link(&offer.bytes, "claim")).await;
    assert_eq!(claim.status(), 410);
    assert_ne!(
        app.reg_status("b@example.org").await,
        Some(RegStatus::Registered)
    );
    // b declines after the close: the seat is not offered on.
    app.post_empty(&reg_link(&offer.bytes, "cancel")).await;
    assert_eq!(
        app.store
            .refill(&app.seats(), app.clock.now().timestamp_millis())
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Waitlisted)
    );
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert!(
        app.mails_like("c@example.org", "A seat is yours")
            .is_empty()
    );
    // Once the training has begun, its links do nothing.
    clock.set(at("2027-01-20T17:30:00Z"));
    let seat = app
        .wait_mail("c@example.org", "You're on the waiting list", 1)
        .await;
    let leave = app.post_empty(&reg_link(&seat.bytes, "cancel")).await;
    assert_eq!(leave.status(), 410);
    assert!(
        app.page_text(&reg_link(&seat.bytes, "cancel"))
            .await
            .contains("has taken place")
    );
    assert_eq!(
        app.reg_status("c@example.org").await,
        Some(RegStatus::Waitlisted)
    );
}

async fn the_form_answers_the_same_page_whatever_the_state(backend: Backend) {
    let app = reg_app(backend, 1).spawn().await;
    let key = TokenKey::parse(app.token_key()).unwrap();
    seed(&app.store, &key, "member@example.org", "active").await;
    app.register_and_confirm("seated@example.org").await;
    app.register_and_confirm("waiting@example.org").await;
    assert_eq!(
        app.register(SESSION, "pending@example.org", "", "", false)
            .await
            .status(),
        200
    );
    for _ in 0..3 {
        app.register(SESSION, "limited@example.org", "", "", false)
            .await;
    }
    let mut pages = Vec::new();
    for email in [
        "new@example.org",
        "pending@example.org",
        "seated@example.org",
        "waiting@example.org",
        "member@example.org",
        "limited@example.org",
    ] {
        let started = std::time::Instant::now();
        let r = app.register(SESSION, email, "", "", false).await;
        assert!(
            started.elapsed() >= std::time::Duration::from_millis(20),
            "the answer floor"
        );
        assert_eq!(r.status(), 200, "{email}");
        pages.push((
            email,
            r.text()
                .await
                .map(unescape)
                .unwrap()
                .replace(email, "ADDRESS"),
        ));
    }
    for (email, page) in &pages {
        assert_eq!(page, &pages[0].1, "{email} got another page");
    }
    // Those already in got their news again, so a lost mail is one form away.
    app.wait_mail("seated@example.org", "You're registered", 2)
        .await;
    app.wait_mail("waiting@example.org", "You're on the waiting list", 2)
        .await;
}

async fn unknown_sessions_and_links_get_a_clear_page(backend: Backend) {
    let app = reg_app(backend, 5).spawn().await;
    for path in ["/trainings/2027-01-21", "/trainings/nope"] {
        let r = app.get(&app.url(path)).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(
            r.text()
                .await
                .map(unescape)
                .unwrap()
                .contains("No such training")
        );
    }
    assert_eq!(
        app.register("2027-01-21", "a@example.org", "", "", false)
            .await
            .status(),
        404
    );
    let bogus = app.url("/registrations/AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA/confirm");
    assert_eq!(app.get(&bogus).await.status(), 404);
    assert_eq!(app.post_empty(&bogus).await.status(), 404);
    assert_eq!(
        app.get(&app.url("/registrations/x/frobnicate"))
            .await
            .status(),
        404
    );
    // The cross-site guard covers the registration form.
    let foreign = app
        .http
        .post(app.url(&format!("/trainings/{SESSION}")))
        .header("origin", "https://evil.example")
        .form(&[("email", "a@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
}

async fn cancelled_and_external_sessions_take_no_registrations(backend: Backend) {
    let app = reg_app(backend, 5)
        .with(|s| {
            s.trainings
                .change
                .push(harborlist::calendar::ChangeSettings {
                    date: SESSION.into(),
                    cancelled: Some(true),
                    ..Default::default()
                })
        })
        .spawn()
        .await;
    let list = app.page_text(&app.url("/trainings")).await;
    assert!(list.contains("Cancelled"), "{list}");
    let page = app
        .page_text(&app.url(&format!("/trainings/{SESSION}")))
        .await;
    assert!(
        page.contains("This training has been cancelled") && !page.contains("<form"),
        "{page}"
    );
    let r = app.register(SESSION, "a@example.org", "", "", false).await;
    assert_eq!(r.status(), 409);
    assert!(
        app.store
            .registrations_for(SESSION)
            .await
            .unwrap()
            .is_empty()
    );

    // With registration elsewhere, the pages keep today's link and take nothing.
    let external = reg_app(backend, 5)
        .with(|s| {
            s.registration.mode = harborlist::config::RegistrationMode::External;
            s.trainings.registration_url = "https://register.example.org/safe-harbor".into();
        })
        .spawn()
        .await;
    let list = external.page_text(&external.url("/trainings")).await;
    assert!(
        list.contains("href=\"https://register.example.org/safe-harbor\"")
            && !list.contains("seats left"),
        "{list}"
    );
    let page = external
        .page_text(&external.url(&format!("/trainings/{SESSION}")))
        .await;
    assert!(
        page.contains("https://register.example.org/safe-harbor") && !page.contains("<form"),
        "{page}"
    );
    let r = external
        .register(SESSION, "a@example.org", "", "", false)
        .await;
    assert_eq!(r.status(), 409);
}
