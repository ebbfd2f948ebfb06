//! Black-box tests: the real app on a random port, a fresh database per test (SQLite and
//! PostgreSQL), real SMTP over TCP to an SMTP server inside the test, and messages read
//! back with a MIME parser.

mod helpers;

mod abuse;
mod agree;
mod announcements;
mod bounce_listener;
mod bounce_mailbox;
mod bounces_check;
mod bounces_staff;
mod cli;
mod config_errors;
mod delivery;
mod files;
mod format;
mod fuzz;
mod fuzz_form;
mod keys;
mod late;
mod leases;
mod limits;
mod observability;
mod proxy;
mod registration;
mod registration_member;
mod registration_plan;
mod registration_seats;
mod registrations_cli;
mod relay_faults;
mod reload;
mod reminders;
mod schedule;
mod status_words;
mod subscribe;
mod subscribers_cli;
mod supervision;
mod terminal;
mod trainings;
