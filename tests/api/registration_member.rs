//! One click for list members: the invitation carries a personal Register link, its page
//! registers the member at once, and list mail says where the recipient stands instead.
//!
//! Driven by a manual clock on the real default calendar: the session of 2027-01-20
//! (17:00 UTC) has its invitation due at 2026-12-30 17:00 UTC. The app starts before
//! that, the subscribers are seeded, then the clock jumps past the due time.

use chrono::{DateTime, Utc};
use harborlist::{
    clock::{ManualClock, to_millis},
    config::{AnnouncementSettings, RegistrationMode},
    domain::{TokenKey, TokenPurpose, new_nonce},
    mail::{
        Letter, Recipient, Transport,
        context::{RecipientRegistration, is_list_mail},
    },
    runtime::Runtime,
    schedule::content,
    store::registrations::{Evidence, NewLink, RegSource, RegStatus, Registrant, SeatOutcome},
};

use crate::{
    both_backends,
    helpers::{
        Backend, MailSink, TestApp, app, eventually, header, html_of, link_in, seed, text_of,
    },
};

both_backends!(
    one_click_registration_from_an_invitation,
    a_full_training_waitlists_the_member_and_a_closed_one_refuses,
    a_registered_member_gets_their_seat_and_give_up_link_instead,
    no_register_link_after_the_close,
    no_register_link_in_external_mode,
    no_register_link_for_a_cancelled_training,
    a_registrant_not_on_the_list_gets_list_mail_as_transactional_mail,
    an_invitation_from_before_a_key_rotation_still_registers,
);

const SESSION: &str = "2027-01-20";
const BEFORE_DUE: &str = "2026-12-01T00:00:00Z";
const AFTER_DUE: &str = "2026-12-30T17:00:05Z";

fn at(s: &str) -> DateTime<Utc> {
    s.parse().expect("instant")
}

fn key(app: &TestApp) -> TokenKey {
    TokenKey::parse(app.token_key()).expect("key")
}

/// An app before the invitation is due, with a@ and b@ on the list and p@ pending.
async fn world(
    backend: Backend,
    tweak: impl FnOnce(&mut harborlist::config::Settings) + Send + 'static,
) -> (TestApp, ManualClock) {
    let clock = ManualClock::new(at(BEFORE_DUE));
    let app = app(backend).clock(clock.clone()).with(tweak).spawn().await;
    let k = key(&app);
    for (email, status) in [
        ("a@example.org", "active"),
        ("b@example.org", "active"),
        ("p@example.org", "pending"),
    ] {
        seed(&app.store, &k, email, status).await;
    }
    (app, clock)
}

/// The first message to `email` whose text contains `marker`.
async fn mail_to(app: &TestApp, email: &str, marker: &str) -> Vec<u8> {
    eventually(
        30,
        &format!("a mail to {email} with {marker:?}"),
        || async {
            app.sink
                .to(email)
                .into_iter()
                .find(|m| text_of(&m.bytes).contains(marker))
                .map(|m| m.bytes)
        },
    )
    .await
}

async fn invitation_to(app: &TestApp, email: &str) -> Vec<u8> {
    mail_to(app, email, "You are invited").await
}

/// Registers `email` for the session straight in the store (as staff would), and returns
/// the registration's nonce (its links derive from it).
async fn register(app: &TestApp, email: &str) -> String {
    let calendar = app.settings.calendar().expect("calendar");
    let session = calendar.session_by_id(SESSION).expect("session");
    let now = app.clock.now();
    let seats = content::seats(&app.settings, &session, 0, now);
    let k = key(app);
    let nonce = new_nonce();
    let hash = k.derive(TokenPurpose::Registration, &nonce).hash();
    let unsub_nonce = new_nonce();
    let unsub_hash = k.derive(TokenPurpose::Unsubscribe, &unsub_nonce).hash();
    let email_key = email.to_lowercase();
    let who = Registrant {
        email,
        email_key: &email_key,
        name: None,
        organisation: None,
        org_key: None,
        unsub_nonce: &unsub_nonce,
        unsub_hash: &unsub_hash,
    };
    let link = NewLink {
        nonce: &nonce,
        hash: &hash,
    };
    let outcome = app
        .store
        .register_directly(
            &seats,
            &who,
            link,
            RegSource::Staff,
            false,
            Evidence::default(),
            to_millis(now),
        )
        .await
        .expect("register");
    assert_eq!(outcome, SeatOutcome::Registered);
    nonce
}

async fn status_of(app: &TestApp, email: &str) -> Option<RegStatus> {
    app.store
        .registration_of(SESSION, email)
        .await
        .expect("registration_of")
        .map(|r| r.status)
}

fn register_links(bytes: &[u8]) -> bool {
    let marker = format!("/trainings/{SESSION}/register/");
    text_of(bytes).contains(&marker) || html_of(bytes).contains(&marker)
}

async fn post(app: &TestApp, url: &str) -> (u16, String) {
    let r = app.post_empty(url).await;
    (r.status().as_u16(), r.text().await.expect("body"))
}

async fn get(app: &TestApp, url: &str) -> (u16, String) {
    let r = app.get(url).await;
    (r.status().as_u16(), r.text().await.expect("body"))
}

/// The Register link in an invitation mailed before a key rotation works while the old key
/// is in `security.previous_token_keys`; one made under any other key does not.
async fn an_invitation_from_before_a_key_rotation_still_registers(backend: Backend) {
    let (app, clock) = world(backend, |_| {}).await;
    clock.set(at(AFTER_DUE));
    let link = link_in(&invitation_to(&app, "a@example.org").await, "/register/");
    let old = app.token_key().to_owned();
    let app = app
        .restart_with(move |s| {
            s.security.token_key = Some(TokenKey::generate_text().into());
            s.security.previous_token_keys = vec![harborlist::config::PreviousTokenKey {
                key: Some(old.into()),
                file: None,
            }];
        })
        .await;
    // The same path on the restarted app (its address may have changed).
    let path = &link[link.find("/trainings/").expect("a path")..];
    let (code, body) = post(&app, &app.url(path)).await;
    assert_eq!(code, 200, "the old link still registers: {body}");
    assert_eq!(
        status_of(&app, "a@example.org").await,
        Some(RegStatus::Registered)
    );
    // A link made under a key the app never had is refused.
    let stranger = TokenKey::parse(&TokenKey::generate_text()).expect("key");
    let id = link
        .rsplit('/')
        .next()
        .expect("link")
        .split('.')
        .next()
        .expect("id");
    let forged = stranger.member_link(SESSION, id.parse().expect("id"), "guess");
    let (code, _) = post(
        &app,
        &app.url(&format!("/trainings/{SESSION}/register/{}", forged.text())),
    )
    .await;
    assert_eq!(code, 404, "a link under an unknown key");
}

async fn one_click_registration_from_an_invitation(backend: Backend) {
    let (app, clock) = world(backend, |_| {}).await;
    clock.set(at(AFTER_DUE));
    let mail = invitation_to(&app, "a@example.org").await;
    assert!(
        text_of(&mail).contains("Register (one click)"),
        "{}",
        text_of(&mail)
    );
    let link = link_in(&mail, "/register/");
    assert!(
        link.contains(&format!("/trainings/{SESSION}/register/")),
        "{link}"
    );
    assert!(
        html_of(&mail).contains(&link),
        "the HTML part has the same link"
    );
    assert!(
        header(&mail, "List-Unsubscribe").is_some(),
        "list mail to a member"
    );

    // GET shows the session and the button, and changes nothing.
    let (code, body) = get(&app, &link).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("Register me") && body.contains("method=\"post\""),
        "{body}"
    );
    assert!(
        body.contains("1605 Eustis Street") && body.contains("30 left"),
        "{body}"
    );
    assert_eq!(app.get(&link).await.status(), 200);
    assert_eq!(
        status_of(&app, "a@example.org").await,
        None,
        "GET changes nothing"
    );

    // POST registers at once.
    let (code, body) = post(&app, &link).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("You&#x27;re registered") || body.contains("You're registered"),
        "{body}"
    );
    assert_eq!(
        status_of(&app, "a@example.org").await,
        Some(RegStatus::Registered)
    );
    let (code, page) = get(&app, &link).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("already registered") && !page.contains("<form"),
        "{page}"
    );

    // A second POST changes nothing and says so.
    let (code, body) = post(&app, &link).await;
    assert_eq!(code, 200);
    assert!(body.contains("already registered"), "{body}");
    assert_eq!(
        status_of(&app, "a@example.org").await,
        Some(RegStatus::Registered)
    );

    // A tampered link, or one moved to another session, is refused.
    let mut tampered = link.clone();
    let last = tampered.pop().expect("char");
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    assert_eq!(get(&app, &tampered).await.0, 404);
    assert_eq!(post(&app, &tampered).await.0, 404);
    let moved = link.replace(SESSION, "2027-03-17");
    assert_eq!(post(&app, &moved).await.0, 404);
    let other_member = link.replacen("/register/", "/register/9", 1);
    assert_eq!(post(&app, &other_member).await.0, 404);

    // b@ leaves the list: their link no longer registers them.
    let b_mail = invitation_to(&app, "b@example.org").await;
    let b_link = link_in(&b_mail, "/register/");
    assert_ne!(b_link, link, "each member has their own link");
    let (_, page) = get(&app, &b_link).await;
    assert!(page.contains("29 left"), "{page}");
    let unsubscribe = harborlist_unsubscribe(&b_mail);
    assert_eq!(app.post_empty(&unsubscribe).await.status(), 200);
    let (code, body) = post(&app, &b_link).await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("list members"), "{body}");
    assert_eq!(get(&app, &b_link).await.0, 403);
    assert_eq!(status_of(&app, "b@example.org").await, None);
}

async fn a_full_training_waitlists_the_member_and_a_closed_one_refuses(backend: Backend) {
    let (app, clock) = world(backend, |s| s.trainings.capacity = 1).await;
    clock.set(at(AFTER_DUE));
    let a = link_in(&invitation_to(&app, "a@example.org").await, "/register/");
    let b = link_in(&invitation_to(&app, "b@example.org").await, "/register/");
    assert_eq!(post(&app, &a).await.0, 200);

    // The page says it is full before anyone presses anything.
    let (code, page) = get(&app, &b).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("Full") && page.contains("Put me on the waiting list"),
        "{page}"
    );
    let (code, body) = post(&app, &b).await;
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("waiting list") && body.contains("number 1"),
        "{body}"
    );
    assert_eq!(
        status_of(&app, "b@example.org").await,
        Some(RegStatus::Waitlisted)
    );
    let (_, again) = post(&app, &b).await;
    assert!(again.contains("already on the waiting list"), "{again}");

    // Registration closes two hours before the start (17:00 UTC).
    clock.set(at("2027-01-20T15:00:00Z"));
    for link in [&a, &b] {
        let (code, body) = get(&app, link).await;
        assert_eq!(code, 410, "{body}");
        assert!(body.contains("Registration has closed"), "{body}");
        assert_eq!(post(&app, link).await.0, 410);
    }
    assert_eq!(
        status_of(&app, "a@example.org").await,
        Some(RegStatus::Registered)
    );
    assert_eq!(
        status_of(&app, "b@example.org").await,
        Some(RegStatus::Waitlisted)
    );
}

fn harborlist_unsubscribe(bytes: &[u8]) -> String {
    crate::helpers::list_unsubscribe(bytes)
}

async fn a_registered_member_gets_their_seat_and_give_up_link_instead(backend: Backend) {
    let (app, clock) = world(backend, |_| {}).await;
    let nonce = register(&app, "a@example.org").await;
    clock.set(at(AFTER_DUE));
    let mail = invitation_to(&app, "a@example.org").await;
    let text = text_of(&mail);
    assert!(
        !register_links(&mail),
        "no Register link once registered:\n{text}"
    );
    assert!(text.contains("You're registered. See you on"), "{text}");
    let token = key(&app).derive(TokenPurpose::Registration, &nonce);
    let give_up = app.url(&format!("/registrations/{}/cancel", token.as_str()));
    assert_eq!(link_in(&mail, "/registrations/"), give_up);
    assert!(html_of(&mail).contains(&give_up));
    // The other member still gets theirs.
    assert!(register_links(&invitation_to(&app, "b@example.org").await));
}

async fn no_register_link_after_the_close(backend: Backend) {
    // Registration closes 30 days ahead: the invitation (21 days ahead) comes after it.
    let (app, clock) = world(backend, |s| {
        s.registration.closes_before = "30d".parse().expect("duration");
    })
    .await;
    clock.set(at(AFTER_DUE));
    let mail = invitation_to(&app, "a@example.org").await;
    let text = text_of(&mail);
    assert!(!register_links(&mail), "{text}");
    assert!(
        text.contains("Registration for this training has closed."),
        "{text}"
    );
    assert!(!text.contains("reply to this message"), "{text}");
}

async fn no_register_link_in_external_mode(backend: Backend) {
    let (app, clock) = world(backend, |s| {
        s.registration.mode = RegistrationMode::External;
        s.trainings.registration_url = "https://register.example.org/safe-harbor".into();
    })
    .await;
    clock.set(at(AFTER_DUE));
    let mail = invitation_to(&app, "a@example.org").await;
    let text = text_of(&mail);
    assert!(!register_links(&mail), "{text}");
    assert!(
        text.contains("To save your seat, please register at:")
            && text.contains("https://register.example.org/safe-harbor"),
        "{text}"
    );
    // And the page refuses, whatever link it is given.
    let k = key(&app);
    let minted = k.member_link(SESSION, 1, "x");
    let url = app.url(&format!("/trainings/{SESSION}/register/{}", minted.text()));
    assert_eq!(get(&app, &url).await.0, 404);
}

async fn no_register_link_for_a_cancelled_training(backend: Backend) {
    // An announcement about the session, which has been cancelled.
    let (app, clock) = world(backend, |s| {
        s.trainings
            .change
            .push(harborlist::calendar::ChangeSettings {
                date: SESSION.into(),
                cancelled: Some(true),
                ..Default::default()
            });
        // From its config form, as staff write it: `training` is the session's date (or,
        // since announcements accept ids, its id, which for a recurring one is the date).
        let entry: AnnouncementSettings = serde_json::from_value(serde_json::json!({
            "id": "news",
            "send_at": AFTER_DUE,
            "subject": "About the January training",
            "markdown": "Hello,\n\nNews about the January training.",
            "training": SESSION,
        }))
        .expect("announcement");
        s.announcements.push(entry);
    })
    .await;
    clock.set(at(AFTER_DUE));
    let mail = mail_to(&app, "a@example.org", "News about the January training").await;
    let text = text_of(&mail);
    assert!(!register_links(&mail), "{text}");
    assert!(!text.contains("Register"), "{text}");
}

/// The sender's contract (`Letter.list_mail` per recipient) and the composer's own rule
/// (list mail only to members), through real SMTP: the same reminder, composed as the
/// sender composes it, reaches a member as list mail and a registrant who isn't on the
/// list as transactional mail.
async fn a_registrant_not_on_the_list_gets_list_mail_as_transactional_mail(backend: Backend) {
    let (app, _clock) = world(backend, |_| {}).await;
    let runtime = Runtime::build(app.settings.clone()).expect("runtime");
    let calendar = app.settings.calendar().expect("calendar");
    let session = calendar.session_by_id(SESSION).expect("session");
    let reminder = app
        .settings
        .reminders
        .iter()
        .find(|r| r.template == "reminder")
        .expect("the default 2-day reminder");
    let now = at("2027-01-18T17:00:05Z");
    let data = content::reminder_data(
        &session,
        0,
        now,
        &content::prodid(&app.settings.list.name),
        reminder,
    );
    let letter = Letter {
        mailing_key: "reminder:test",
        template: "reminder",
        list_mail: is_list_mail("reminder"),
        data: &data,
        training: Some(SESSION),
    };
    let sink = MailSink::start();
    let mut mail = app.settings.mail.clone();
    mail.smtp_url = Some(format!("smtp://127.0.0.1:{}", sink.port).into());
    let transport = Transport::from_settings(&mail).expect("transport");
    for (email, member) in [("a@example.org", true), ("p@example.org", false)] {
        let to = Recipient {
            subscriber_id: 7,
            email,
            name: None,
            unsub_nonce: "nonce",
            member,
            delivery_id: None,
            registration: Some(RecipientRegistration {
                status: RegStatus::Registered,
                nonce: "reg-nonce",
                offer_expires_ms: None,
            }),
        };
        let c = runtime
            .composer
            .compose(&letter, &to, now)
            .expect("compose");
        transport
            .send(&c.envelope, &c.bytes, &c.message_id)
            .await
            .expect("send");
    }
    sink.wait_for(2, 20).await;
    let give_up = app.url(&format!(
        "/registrations/{}/cancel",
        key(&app)
            .derive(TokenPurpose::Registration, "reg-nonce")
            .as_str()
    ));
    for (email, member) in [("a@example.org", true), ("p@example.org", false)] {
        let bytes = sink.to(email)[0].bytes.clone();
        let text = text_of(&bytes);
        let html = html_of(&bytes);
        assert!(
            text.contains("The Safe Harbor training you registered for is coming up soon"),
            "{text}"
        );
        assert!(
            text.contains("See you on") && text.contains("1605 Eustis Street"),
            "{text}"
        );
        assert_eq!(link_in(&bytes, "/registrations/"), give_up);
        assert!(!register_links(&bytes));
        for name in ["List-Unsubscribe", "List-Unsubscribe-Post", "List-Id"] {
            assert_eq!(header(&bytes, name).is_some(), member, "{email}: {name}");
        }
        assert_eq!(text.contains("/unsubscribe/"), member, "{email}: {text}");
        assert_eq!(html.contains("/unsubscribe/"), member, "{email}");
        assert_eq!(
            text.to_lowercase().contains("unsubscribe"),
            member,
            "{email}: {text}"
        );
        assert!(
            text.contains("1605 Eustis Street, St Paul, MN 55108"),
            "the postal address stays"
        );
    }
}

/// The same end to end, through the planner and the sender: the default 2-day reminder
/// (audience "registered") reaches a registered member as list mail and a registrant who is
/// not on the list as transactional mail, and not the member who did not register.
async fn the_registered_reminder_is_transactional_for_a_registrant_not_on_the_list(
    backend: Backend,
) {
    let (app, clock) = world(backend, |_| {}).await;
    register(&app, "a@example.org").await;
    register(&app, "p@example.org").await;
    clock.set(at("2027-01-18T17:00:05Z"));
    let member = mail_to(&app, "a@example.org", "you registered for is coming up").await;
    let registrant = mail_to(&app, "p@example.org", "you registered for is coming up").await;
    assert!(header(&member, "List-Unsubscribe").is_some());
    assert!(text_of(&member).contains("/unsubscribe/"));
    for name in ["List-Unsubscribe", "List-Id"] {
        assert!(header(&registrant, name).is_none(), "{name}");
    }
    let text = text_of(&registrant);
    assert!(!text.to_lowercase().contains("unsubscribe"), "{text}");
    assert!(
        text.contains("See you on") && text.contains("/cancel"),
        "{text}"
    );
    assert!(!html_of(&registrant).contains("/unsubscribe/"));
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert!(
        app.sink
            .to("b@example.org")
            .iter()
            .all(|m| !text_of(&m.bytes).contains("coming up")),
        "the member who did not register gets no 2-day reminder"
    );
}

mod after_merge {
    use crate::helpers::Backend;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sqlite_registered_reminder_is_transactional_for_non_members() {
        super::the_registered_reminder_is_transactional_for_a_registrant_not_on_the_list(
            Backend::Sqlite,
        )
        .await
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn postgres_registered_reminder_is_transactional_for_non_members() {
        super::the_registered_reminder_is_transactional_for_a_registrant_not_on_the_list(
            Backend::Postgres,
        )
        .await
    }
}
