//! Everything that must hold before a configuration goes live, checked by one function.
//!
//! `check` prints every [`Finding`]; `serve` and a reload call [`verify`] on the runtime
//! they built and refuse it on the first failure. So whatever serve or a reload would
//! refuse, `check` refuses too. Settings themselves (types, ranges, keys that span
//! sections) were checked when they were loaded; here the templates meet the data:
//!
//! * every web page the routes render exists, and renders in strict mode with each shape
//!   of context its routes give it (`web::page_samples`);
//! * every email the daemon can send (confirmation, welcome, goodbye, update,
//!   cancellation, each reminder, each announcement, each registration mail) is composed, for a recipient with a
//!   name and one without, from data built by the real path's own functions
//!   ([`samples`]);
//! * and, as warnings that refuse nothing, a reminder for those registered or not
//!   registered while registration is taken elsewhere (it goes to the whole list).

pub mod samples;

use chrono::{DateTime, Utc};

use crate::{
    config::TransportKind,
    mail::{Letter, Recipient, smtp::Relay},
    runtime::{Runtime, RuntimeError},
    templates::TemplateError,
    web,
};

/// One thing checked: what, and either a note for `check`'s "ok" line or the problem.
#[derive(Debug)]
pub struct Finding {
    pub subject: String,
    pub outcome: Result<String, String>,
    /// For announcements: its index in `settings.announcements`.
    pub announcement: Option<usize>,
}

/// Everything [`verify`] checks, each with its outcome.
pub fn findings(runtime: &Runtime, now: DateTime<Utc>) -> Vec<Finding> {
    let mut out = relay_finding(runtime).into_iter().collect::<Vec<_>>();
    out.extend(web_findings(runtime, now));
    out.extend(email_findings(runtime, now));
    out.extend(audience_findings(runtime));
    out
}

/// How a note that is a warning begins: `check` prints it as `warn`, and it refuses
/// nothing.
pub const WARNING: &str = "warning: ";

/// A reminder for those registered or not registered means nothing when registration is
/// taken elsewhere: harborlist does not know who registered, so it goes to the whole list.
/// Staff should hear that from `check` rather than find out from the list.
fn audience_findings(runtime: &Runtime) -> Vec<Finding> {
    let settings = &runtime.settings;
    if settings.registration.mode != crate::config::RegistrationMode::External {
        return Vec::new();
    }
    settings
        .reminders
        .iter()
        .enumerate()
        .filter(|(_, r)| r.audience != crate::config::Audience::List)
        .map(|(i, r)| Finding {
            subject: format!("reminders[{i}].audience"),
            outcome: Ok(format!(
                "{WARNING}reminder {:?} is for audience {:?}, but with registration.mode = \"external\" harborlist does not know who registered, so it goes to the whole list",
                r.name,
                r.audience.as_str()
            )),
            announcement: None,
        })
        .collect()
}

/// The first problem [`findings`] reports, as the error that refuses the runtime.
pub fn verify(runtime: &Runtime, now: DateTime<Utc>) -> Result<(), RuntimeError> {
    match findings(runtime, now)
        .into_iter()
        .find(|f| f.outcome.is_err())
    {
        Some(Finding {
            subject,
            outcome: Err(problem),
            ..
        }) => Err(TemplateError::Preflight { subject, problem }.into()),
        _ => Ok(()),
    }
}

/// The relay URL as the SMTP pool reads it (config validation asked lettre, which accepts
/// more), so that `check` refuses what would stop `serve` from building its transport.
fn relay_finding(runtime: &Runtime) -> Option<Finding> {
    let mail = &runtime.settings.mail;
    if mail.transport != TransportKind::Smtp {
        return None;
    }
    let url = mail.relay_url();
    Some(Finding {
        subject: "mail.smtp_url".into(),
        outcome: Relay::parse(url).map(|_| String::new()),
        announcement: None,
    })
}

fn web_findings(runtime: &Runtime, now: DateTime<Utc>) -> Vec<Finding> {
    let sessions = runtime.calendar.upcoming(now, 3);
    let samples = web::page_samples(&runtime.settings, &sessions);
    let dir = runtime.settings.templates.dir.join("web");
    let mut pages: Vec<&str> = web::PAGES.to_vec();
    pages.extend(
        runtime
            .web
            .pages()
            .iter()
            .map(String::as_str)
            .filter(|p| !web::PAGES.contains(p)),
    );
    pages
        .into_iter()
        .map(|page| {
            let outcome = if !runtime.web.pages().iter().any(|p| p == page) {
                Err(format!(
                    "{} is missing; the web pages are rendered with it",
                    dir.join(format!("{page}.html.hbs")).display()
                ))
            } else if !web::PAGES.contains(&page) {
                Ok("not used by any route".to_owned())
            } else {
                samples
                    .iter()
                    .filter(|(p, _)| *p == page)
                    .try_for_each(|(_, data)| runtime.web.render(page, data).map(drop))
                    .map(|()| String::new())
                    .map_err(|e| e.to_string())
            };
            Finding {
                subject: format!("web page {page}"),
                outcome,
                announcement: None,
            }
        })
        .collect()
}

fn email_findings(runtime: &Runtime, now: DateTime<Utc>) -> Vec<Finding> {
    let session = samples::next_session(&runtime.calendar, now);
    let uses = samples::uses(&runtime.settings, &runtime.calendar, session.as_ref(), now);
    let mut out: Vec<Finding> = uses
        .iter()
        .map(|u| {
            let outcome = sample_recipients()
                .iter()
                .try_for_each(|to| {
                    // With and without the training, so a template is composed both with
                    // a Register link (and the recipient's registration) and without.
                    [crate::mail::context::training_of(&u.data), None]
                        .into_iter()
                        .try_for_each(|training| {
                            let letter = Letter {
                                mailing_key: "check",
                                template: &u.template,
                                list_mail: u.list_mail,
                                data: &u.data,
                                training,
                            };
                            runtime.composer.compose(&letter, to, now).map(drop)
                        })
                })
                .map(|()| String::new())
                .map_err(|e| e.to_string());
            Finding {
                subject: u.label.clone(),
                outcome,
                announcement: u.announcement,
            }
        })
        .collect();
    for name in runtime.composer.templates().names() {
        if !uses.iter().any(|u| u.template == name) {
            out.push(Finding {
                subject: format!("email template {name}"),
                outcome: Ok("not used by any mailing".into()),
                announcement: None,
            });
        }
    }
    out
}

/// The recipients every email is composed for in `check`: with a name and without; a
/// member not registered (who gets the Register link), registered, waiting, or holding an
/// offer; and a registrant who is not on the list (transactional: no unsubscribe footer).
fn sample_recipients() -> Vec<Recipient<'static>> {
    use crate::{mail::context::RecipientRegistration, store::registrations::RegStatus};
    let base = Recipient {
        delivery_id: Some(1),
        subscriber_id: 1,
        email: "sample@example.org",
        name: Some("Sam <Sample>"),
        unsub_nonce: "0",
        member: true,
        registration: None,
    };
    let reg = |status| {
        Some(RecipientRegistration {
            status,
            nonce: "0",
            offer_expires_ms: (status == RegStatus::Offered).then_some(0),
        })
    };
    vec![
        base,
        Recipient { name: None, ..base },
        Recipient {
            registration: reg(RegStatus::Registered),
            ..base
        },
        Recipient {
            registration: reg(RegStatus::Waitlisted),
            ..base
        },
        Recipient {
            registration: reg(RegStatus::Offered),
            ..base
        },
        Recipient {
            member: false,
            registration: reg(RegStatus::Registered),
            ..base
        },
    ]
}
