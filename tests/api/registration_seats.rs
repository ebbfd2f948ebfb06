//! Never overbooked, never out of order: many confirmations at once for few seats (over
//! two instances on one PostgreSQL, one on SQLite), and several seats freed at once.

use harborlist::store::registrations::RegStatus;
use tokio::task::JoinSet;

use crate::{
    both_backends,
    helpers::{Backend, SESSION, TestApp, reg_app},
};

both_backends!(
    a_hundred_confirmations_for_ten_seats_leave_ten_registered_and_ninety_in_order,
    seats_freed_at_once_are_offered_to_different_people_in_order
);

/// The app and, on PostgreSQL, a second instance on the same database: the requests are
/// split between them.
async fn instances(backend: Backend, capacity: u32) -> Vec<TestApp> {
    let first = reg_app(backend, capacity).spawn().await;
    let mut apps = vec![];
    if backend == Backend::Postgres {
        apps.push(first.sibling().await);
    }
    apps.insert(0, first);
    apps
}

/// Posts each of `urls` at once, spread over `apps`; every answer must be a 200.
async fn post_all(apps: &[TestApp], urls: Vec<String>) {
    let mut set = JoinSet::new();
    for (i, url) in urls.into_iter().enumerate() {
        let app = &apps[i % apps.len()];
        // Each instance answers its own share: the same path, on its own port.
        let url = url.replacen(&apps[0].address, &app.address, 1);
        let http = app.http.clone();
        set.spawn(async move {
            let r = http
                .post(&url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body("")
                .send()
                .await
                .expect("POST");
            (r.status().as_u16(), url)
        });
    }
    while let Some(done) = set.join_next().await {
        let (status, url) = done.expect("task");
        assert_eq!(status, 200, "{url}");
    }
}

/// 100 public requests (pending registrations), then their 100 confirmation POSTs all at
/// once.
async fn a_hundred_confirmations_for_ten_seats_leave_ten_registered_and_ninety_in_order(
    backend: Backend,
) {
    let apps = instances(backend, 10).await;
    let app = &apps[0];
    let mut set = JoinSet::new();
    for i in 0..100 {
        let http = app.http.clone();
        let url = app.url(&format!("/trainings/{SESSION}"));
        set.spawn(async move {
            let email = format!("p{i}@example.org");
            let r = http
                .post(url)
                .form(&[
                    ("email", email.as_str()),
                    ("name", ""),
                    ("organisation", ""),
                ])
                .send()
                .await
                .expect("POST");
            r.status().as_u16()
        });
    }
    while let Some(status) = set.join_next().await {
        assert_eq!(status.expect("task"), 200);
    }
    let tokens = app.reg_tokens().await;
    assert_eq!(tokens.len(), 100);
    let urls = tokens
        .iter()
        .map(|(_, token)| app.url(&format!("/registrations/{token}/confirm")))
        .collect();
    post_all(&apps, urls).await;

    let rows = app.store.registrations_for(SESSION).await.expect("rows");
    let count = |s: RegStatus| rows.iter().filter(|r| r.status == s).count();
    assert_eq!(count(RegStatus::Registered), 10);
    assert_eq!(count(RegStatus::Waitlisted), 90);
    let mut positions: Vec<i64> = rows
        .iter()
        .filter(|r| r.status == RegStatus::Waitlisted)
        .map(|r| r.position.expect("a waiting-list position"))
        .collect();
    positions.sort_unstable();
    assert_eq!(positions, (1..=90).collect::<Vec<_>>(), "no gap, no repeat");
    let counts = app.store.seat_counts().await.expect("counts");
    assert_eq!(counts[SESSION].taken(), 10);
}

/// Three seats given up at once (three POSTs, over both instances) go to the first three
/// on the waiting list, one offer each, and the rest keep waiting in order.
async fn seats_freed_at_once_are_offered_to_different_people_in_order(backend: Backend) {
    let apps = instances(backend, 3).await;
    let app = &apps[0];
    for i in 0..8 {
        app.register_and_confirm(&format!("q{i}@example.org")).await;
    }
    let tokens = app.reg_tokens().await;
    let cancels = tokens[..3]
        .iter()
        .map(|(_, t)| app.url(&format!("/registrations/{t}/cancel")))
        .collect();
    post_all(&apps, cancels).await;

    for (i, want) in [
        RegStatus::Cancelled,
        RegStatus::Cancelled,
        RegStatus::Cancelled,
        RegStatus::Offered,
        RegStatus::Offered,
        RegStatus::Offered,
        RegStatus::Waitlisted,
        RegStatus::Waitlisted,
    ]
    .into_iter()
    .enumerate()
    {
        let email = format!("q{i}@example.org");
        assert_eq!(app.reg_status(&email).await, Some(want), "{email}");
    }
    for i in 3..6 {
        let email = format!("q{i}@example.org");
        app.wait_mail(&email, "A seat is yours", 1).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    for i in 0..8 {
        let email = format!("q{i}@example.org");
        let offers = app.mails_like(&email, "A seat is yours").len();
        assert_eq!(
            offers,
            usize::from((3..6).contains(&i)),
            "{email}: one offer each, to the first three"
        );
    }
}
