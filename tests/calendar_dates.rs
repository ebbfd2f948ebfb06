//! Behaviour tests for `harborlist::calendar`: the date engine against an
//! independent computation, DST edges, config changes and errors, the
//! iCalendar output (checked by a small hand parser) and human wording.

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, NaiveTime, Offset, TimeDelta, TimeZone, Utc, Weekday};
use harborlist::calendar::ics::{self, IcsEvent, Method};
use harborlist::calendar::{
    Calendar, CalendarError, ChangeSettings, ExtraSettings, Session, TrainingsSettings, human,
};

const DOMAIN: &str = "lists.example.org";

fn d(y: i32, m: u32, day: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, day).expect("valid test date")
}

fn utc(y: i32, m: u32, day: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, day, h, min, 0)
        .single()
        .expect("valid test instant")
}

fn calendar(settings: &TrainingsSettings) -> Calendar {
    Calendar::from_settings(settings, DOMAIN).expect("settings should be valid")
}

fn error(settings: &TrainingsSettings) -> CalendarError {
    Calendar::from_settings(settings, DOMAIN).expect_err("settings should be rejected")
}

fn change(date: &str) -> ChangeSettings {
    ChangeSettings {
        date: date.into(),
        cancelled: None,
        start: None,
        start_time: None,
        duration: None,
        location: None,
        topic: None,
        title: None,
        description: None,
        capacity: None,
    }
}

fn extra(start: &str) -> ExtraSettings {
    ExtraSettings {
        id: None,
        start: start.into(),
        duration: None,
        topic: None,
        title: None,
        location: None,
        description: None,
        registration_url: None,
        capacity: None,
    }
}

fn with_changes(changes: Vec<ChangeSettings>) -> TrainingsSettings {
    TrainingsSettings {
        change: changes,
        ..TrainingsSettings::default()
    }
}

fn with_extras(extras: Vec<ExtraSettings>) -> TrainingsSettings {
    TrainingsSettings {
        extra: extras,
        ..TrainingsSettings::default()
    }
}

fn local_time(t: &DateTime<chrono_tz::Tz>) -> NaiveTime {
    t.naive_local().time()
}

fn hm(h: u32, m: u32) -> NaiveTime {
    NaiveTime::from_hms_opt(h, m, 0).expect("valid time")
}

// ---------------------------------------------------------------- settings

#[test]
fn empty_trainings_table_gives_the_published_schedule() {
    #[derive(serde::Deserialize)]
    struct Root {
        trainings: TrainingsSettings,
    }
    let root: Root = toml::from_str("[trainings]\n").expect("empty table parses");
    assert_eq!(root.trainings, TrainingsSettings::default());
    let s = &root.trainings;
    assert_eq!(s.timezone, "America/Chicago");
    assert_eq!(s.rrule, "FREQ=MONTHLY;BYMONTH=1,3,5,7,9,11;BYDAY=3WE");
    assert_eq!(
        (s.starts_on.as_str(), s.start_time.as_str()),
        ("2024-01-01", "11:00")
    );
    assert_eq!(s.duration, "90m");
    assert_eq!(s.title, "Safe Harbor training for youth workers");
    assert_eq!(
        s.location,
        "LSS/Children's Home Society, 1605 Eustis Street, St Paul, MN"
    );
    assert_eq!(s.registration_url, "");
    let desc = s.description.to_lowercase();
    assert!(desc.contains("free") && desc.contains("registration") && desc.contains("space"));

    let round: TrainingsSettings =
        toml::from_str(&toml::to_string(s).expect("serializes")).expect("round trips");
    assert_eq!(&round, s);
}

#[test]
fn toml_changes_and_extras_parse_and_unknown_keys_are_rejected() {
    let ok: TrainingsSettings = toml::from_str(
        r#"
        registration_url = "https://example.org/register"
        [[change]]
        date = "2027-03-17"
        cancelled = true
        [[extra]]
        id = "kickoff"
        start = "2027-02-03T11:00"
        topic = "Intro"
        "#,
    )
    .expect("valid config");
    assert_eq!(ok.change[0].cancelled, Some(true));
    assert_eq!(ok.extra[0].id.as_deref(), Some("kickoff"));
    assert_eq!(ok.timezone, "America/Chicago");

    for bad in [
        "timezon = \"UTC\"",
        "[[change]]\ndate = \"2027-03-17\"\ncancel = true",
        "[[extra]]\nstart = \"2027-02-03T11:00\"\nwhere = \"x\"",
    ] {
        let err = toml::from_str::<TrainingsSettings>(bad).expect_err(bad);
        assert!(err.to_string().contains("unknown field"), "{bad}: {err}");
    }
}

// ------------------------------------------------------------- date engine

/// Third Wednesday computed by hand: first of the month, forward to the
/// first Wednesday, plus two weeks.
fn third_wednesday(year: i32, month: u32) -> NaiveDate {
    let mut day = d(year, month, 1);
    while day.weekday() != Weekday::Wed {
        day = day.succ_opt().expect("in range");
    }
    day + TimeDelta::days(14)
}

fn nth_sunday(year: i32, month: u32, n: i64) -> NaiveDate {
    let mut day = d(year, month, 1);
    while day.weekday() != Weekday::Sun {
        day = day.succ_opt().expect("in range");
    }
    day + TimeDelta::days(7 * (n - 1))
}

/// US rule since 2007: daylight time from the second Sunday of March to the
/// first Sunday of November. Training dates are Wednesdays, so never on a
/// transition day and a plain date comparison is enough.
fn expected_offset_seconds(date: NaiveDate) -> i32 {
    let dst = date > nth_sunday(date.year(), 3, 2) && date < nth_sunday(date.year(), 11, 1);
    if dst { -5 * 3600 } else { -6 * 3600 }
}

#[test]
fn default_schedule_matches_independent_computation_2024_to_2060() {
    let cal = calendar(&TrainingsSettings::default());
    let sessions = cal.sessions_between(utc(2024, 1, 1, 0, 0), utc(2061, 1, 1, 0, 0));

    let expected: Vec<NaiveDate> = (2024..=2060)
        .flat_map(|y| [1, 3, 5, 7, 9, 11].map(|m| third_wednesday(y, m)))
        .collect();
    assert_eq!(expected.len(), 37 * 6);
    let got: Vec<NaiveDate> = sessions.iter().map(|s| s.start.date_naive()).collect();
    assert_eq!(got, expected);

    let mut saw = (false, false);
    for s in &sessions {
        let date = s.start.date_naive();
        assert_eq!(s.original_date, date);
        assert_eq!(local_time(&s.start), hm(11, 0), "{date}");
        assert_eq!(local_time(&s.end), hm(12, 30), "{date}");
        assert_eq!(s.end - s.start, TimeDelta::minutes(90));
        let offset = expected_offset_seconds(date);
        assert_eq!(s.start.offset().fix().local_minus_utc(), offset, "{date}");
        assert_eq!(s.end.offset().fix().local_minus_utc(), offset, "{date}");
        // The UTC hour is what actually moves with DST.
        let utc_hour = s.start.with_timezone(&Utc).time();
        assert_eq!(
            utc_hour,
            if offset == -5 * 3600 {
                hm(16, 0)
            } else {
                hm(17, 0)
            }
        );
        saw.0 |= offset == -5 * 3600;
        saw.1 |= offset == -6 * 3600;
        assert_eq!(
            s.uid,
            format!("training-{}@{DOMAIN}", date.format("%Y%m%d"))
        );
        assert!(!s.cancelled && !s.extra);
        assert_eq!(s.title, "Safe Harbor training for youth workers");
        assert_eq!(s.topic, None);
        assert_eq!(s.registration_url, None);
    }
    assert!(saw.0 && saw.1, "both CST and CDT sessions must occur");
    assert_eq!(cal.timezone(), chrono_tz::America::Chicago);
    assert_eq!(cal.settings(), &TrainingsSettings::default());
}

#[test]
fn nothing_before_starts_on_and_windows_are_half_open() {
    let cal = calendar(&TrainingsSettings::default());
    assert!(
        cal.sessions_between(utc(2000, 1, 1, 0, 0), utc(2024, 1, 1, 0, 0))
            .is_empty()
    );
    let jan = utc(2027, 1, 20, 17, 0);
    assert!(cal.sessions_between(utc(2027, 1, 1, 0, 0), jan).is_empty());
    assert_eq!(
        cal.sessions_between(jan, jan + TimeDelta::seconds(1)).len(),
        1
    );
    assert!(cal.sessions_between(jan, jan).is_empty());

    let next = cal.upcoming(jan, 3);
    let dates: Vec<_> = next.iter().map(|s| s.original_date).collect();
    assert_eq!(dates, vec![d(2027, 1, 20), d(2027, 3, 17), d(2027, 5, 19)]);
    assert_eq!(
        cal.upcoming(jan + TimeDelta::seconds(1), 1)[0].original_date,
        d(2027, 3, 17)
    );
    assert!(cal.upcoming(jan, 0).is_empty());

    assert_eq!(
        cal.session_on(d(2027, 1, 20))
            .map(|s| s.start.with_timezone(&Utc)),
        Some(jan)
    );
    assert_eq!(cal.session_on(d(2027, 1, 21)), None);
}

#[test]
fn starts_on_is_respected_mid_year() {
    let cal = calendar(&TrainingsSettings {
        starts_on: "2027-03-18".into(),
        ..TrainingsSettings::default()
    });
    assert_eq!(
        cal.upcoming(utc(2020, 1, 1, 0, 0), 1)[0].original_date,
        d(2027, 5, 19)
    );
}

// --------------------------------------------------------------- changes

#[test]
fn cancel_move_and_edit_single_sessions() {
    let cal = calendar(&with_changes(vec![
        ChangeSettings {
            cancelled: Some(true),
            ..change("2027-03-17")
        },
        ChangeSettings {
            start: Some("2027-05-26T13:00".into()),
            ..change("2027-05-19")
        },
        ChangeSettings {
            start_time: Some("09:30".into()),
            ..change("2027-07-21")
        },
        ChangeSettings {
            location: Some("Online (Zoom)".into()),
            topic: Some("Labor trafficking".into()),
            title: Some("Safe Harbor: special session".into()),
            duration: Some("2h".into()),
            ..change("2027-11-17")
        },
    ]));

    let cancelled = cal.session_on(d(2027, 3, 17)).expect("still listed");
    assert!(cancelled.cancelled);
    assert_eq!(local_time(&cancelled.start), hm(11, 0));
    let in_march = cal.sessions_between(utc(2027, 3, 1, 0, 0), utc(2027, 4, 1, 0, 0));
    assert_eq!(in_march.len(), 1);
    assert!(in_march[0].cancelled);

    // Selected by its new start, keeps the UID of its original date.
    let moved = cal
        .session_on(d(2027, 5, 19))
        .expect("found by original date");
    assert_eq!(
        moved.start.naive_local(),
        d(2027, 5, 26).and_time(hm(13, 0))
    );
    assert_eq!(local_time(&moved.end), hm(14, 30));
    assert_eq!(moved.uid, format!("training-20270519@{DOMAIN}"));
    assert!(
        cal.sessions_between(utc(2027, 5, 19, 0, 0), utc(2027, 5, 20, 0, 0))
            .is_empty()
    );
    let week_later = cal.sessions_between(utc(2027, 5, 26, 0, 0), utc(2027, 5, 27, 0, 0));
    assert_eq!(week_later, vec![moved.clone()]);

    let early = cal.session_on(d(2027, 7, 21)).expect("exists");
    assert_eq!(
        early.start.naive_local(),
        d(2027, 7, 21).and_time(hm(9, 30))
    );

    let edited = cal.session_on(d(2027, 11, 17)).expect("exists");
    assert_eq!(edited.location, "Online (Zoom)");
    assert_eq!(edited.topic.as_deref(), Some("Labor trafficking"));
    assert_eq!(edited.title, "Safe Harbor: special session");
    assert_eq!(local_time(&edited.end), hm(13, 0));

    // Untouched sessions are untouched.
    let plain = calendar(&TrainingsSettings::default());
    assert_eq!(
        cal.session_on(d(2027, 9, 15)),
        plain.session_on(d(2027, 9, 15))
    );
}

#[test]
fn sessions_moved_far_are_found_by_window_and_upcoming() {
    let cal = calendar(&with_changes(vec![
        // Three weeks later, past the next month's boundary.
        ChangeSettings {
            start: Some("2027-08-11T11:00".into()),
            ..change("2027-07-21")
        },
        // Two weeks earlier, given as RFC 3339.
        ChangeSettings {
            start: Some("2027-09-01T16:00:00Z".into()),
            ..change("2027-09-15")
        },
    ]));
    let aug = cal.sessions_between(utc(2027, 8, 1, 0, 0), utc(2027, 9, 1, 0, 0));
    assert_eq!(
        aug.iter().map(|s| s.original_date).collect::<Vec<_>>(),
        vec![d(2027, 7, 21)]
    );
    assert!(
        cal.sessions_between(utc(2027, 7, 1, 0, 0), utc(2027, 8, 1, 0, 0))
            .is_empty()
    );

    let sept_first = cal.sessions_between(utc(2027, 9, 1, 0, 0), utc(2027, 9, 2, 0, 0));
    assert_eq!(sept_first.len(), 1);
    assert_eq!(local_time(&sept_first[0].start), hm(11, 0));

    let next = cal.upcoming(utc(2027, 7, 1, 0, 0), 2);
    let order: Vec<_> = next.iter().map(|s| s.original_date).collect();
    assert_eq!(order, vec![d(2027, 7, 21), d(2027, 9, 15)]);
    let after_aug = cal.upcoming(utc(2027, 8, 12, 0, 0), 1);
    assert_eq!(after_aug[0].original_date, d(2027, 9, 15));
}

#[test]
fn moves_onto_dst_transition_days_keep_wall_clock_time() {
    let cal = calendar(&with_changes(vec![
        ChangeSettings {
            start: Some("2027-03-14T11:00".into()),
            ..change("2027-03-17")
        },
        ChangeSettings {
            start: Some("2027-11-07T11:00".into()),
            ..change("2027-11-17")
        },
    ]));
    let spring = cal.session_on(d(2027, 3, 17)).expect("exists");
    assert_eq!(spring.start.to_rfc3339(), "2027-03-14T11:00:00-05:00");
    assert_eq!(spring.end.to_rfc3339(), "2027-03-14T12:30:00-05:00");
    let fall = cal.session_on(d(2027, 11, 17)).expect("exists");
    assert_eq!(fall.start.to_rfc3339(), "2027-11-07T11:00:00-06:00");
    assert_eq!(human::time_range(&fall), "11:00 AM – 12:30 PM CST");

    let err = error(&with_changes(vec![ChangeSettings {
        start: Some("2027-03-14T02:30".into()),
        ..change("2027-03-17")
    }]));
    assert_eq!(err.key(), "trainings.change[0].start");
    assert!(err.problem().contains("does not exist"), "{err}");
}

#[test]
fn change_errors_name_the_key() {
    let cases: Vec<(Vec<ChangeSettings>, &str, &str)> = vec![
        (
            vec![change("2027-01-20"), change("2027-03-10")],
            "trainings.change[1].date",
            "2027-03-10 is not a date of the recurrence",
        ),
        (
            vec![change("2027-13-01")],
            "trainings.change[0].date",
            "expected a date",
        ),
        (
            vec![change("2027-01-20"), change("2027-01-20")],
            "trainings.change[1].date",
            "already changed by trainings.change[0]",
        ),
        (
            vec![ChangeSettings {
                cancelled: Some(true),
                start_time: Some("13:00".into()),
                ..change("2027-01-20")
            }],
            "trainings.change[0].cancelled",
            "both cancel",
        ),
        (
            vec![ChangeSettings {
                start: Some("2027-01-21T11:00".into()),
                start_time: Some("13:00".into()),
                ..change("2027-01-20")
            }],
            "trainings.change[0].start_time",
            "not both",
        ),
        (
            vec![ChangeSettings {
                start_time: Some("1pm".into()),
                ..change("2027-01-20")
            }],
            "trainings.change[0].start_time",
            "HH:MM",
        ),
        (
            vec![ChangeSettings {
                start: Some("next week".into()),
                ..change("2027-01-20")
            }],
            "trainings.change[0].start",
            "expected RFC 3339",
        ),
        (
            vec![ChangeSettings {
                duration: Some("0m".into()),
                ..change("2027-01-20")
            }],
            "trainings.change[0].duration",
            "longer than zero",
        ),
        (
            vec![ChangeSettings {
                title: Some(" ".into()),
                ..change("2027-01-20")
            }],
            "trainings.change[0].title",
            "empty",
        ),
    ];
    for (changes, key, problem) in cases {
        let err = error(&with_changes(changes));
        assert_eq!(err.key(), key, "{err}");
        assert!(err.problem().contains(problem), "{err}");
        assert_eq!(err.to_string(), format!("{}: {}", err.key(), err.problem()));
    }
    let err = error(&with_changes(vec![
        change("2027-01-20"),
        change("2027-03-10"),
    ]));
    assert_eq!(
        err.to_string(),
        "trainings.change[1].date: 2027-03-10 is not a date of the recurrence"
    );
}

#[test]
fn top_level_errors_name_the_key() {
    let base = TrainingsSettings::default;
    let err = error(&TrainingsSettings {
        timezone: "America/Chicgo".into(),
        ..base()
    });
    assert_eq!(
        err.to_string(),
        r#"trainings.timezone: unknown time zone "America/Chicgo""#
    );

    let cases: Vec<(TrainingsSettings, &str)> = vec![
        (
            TrainingsSettings {
                rrule: "FREQ=FORTNIGHTLY".into(),
                ..base()
            },
            "trainings.rrule",
        ),
        (
            TrainingsSettings {
                rrule: "FREQ=HOURLY".into(),
                ..base()
            },
            "trainings.rrule",
        ),
        (
            TrainingsSettings {
                starts_on: "01/01/2024".into(),
                ..base()
            },
            "trainings.starts_on",
        ),
        (
            TrainingsSettings {
                start_time: "11am".into(),
                ..base()
            },
            "trainings.start_time",
        ),
        (
            TrainingsSettings {
                duration: "0s".into(),
                ..base()
            },
            "trainings.duration",
        ),
        (
            TrainingsSettings {
                duration: "-90m".into(),
                ..base()
            },
            "trainings.duration",
        ),
        (
            TrainingsSettings {
                duration: "ninety".into(),
                ..base()
            },
            "trainings.duration",
        ),
        (
            TrainingsSettings {
                title: "".into(),
                ..base()
            },
            "trainings.title",
        ),
        (
            TrainingsSettings {
                registration_url: "example.org/signup".into(),
                ..base()
            },
            "trainings.registration_url",
        ),
        // Second Sunday of March at 02:30 never exists in Chicago.
        (
            TrainingsSettings {
                rrule: "FREQ=YEARLY;BYMONTH=3;BYDAY=2SU".into(),
                start_time: "02:30".into(),
                ..base()
            },
            "trainings.start_time",
        ),
    ];
    for (settings, key) in cases {
        let err = error(&settings);
        assert_eq!(err.key(), key, "{err}");
    }
    let err = Calendar::from_settings(&base(), "bad domain").expect_err("domain checked");
    assert_eq!(err.key(), "uid_domain");
}

// ---------------------------------------------------------------- extras

#[test]
fn extras_with_and_without_id() {
    let cal = calendar(&TrainingsSettings {
        registration_url: "https://example.org/register".into(),
        extra: vec![
            ExtraSettings {
                id: Some("kickoff-2027".into()),
                topic: Some("Intro for new staff".into()),
                location: Some("Online".into()),
                duration: Some("1h".into()),
                ..extra("2027-02-03T11:00")
            },
            ExtraSettings {
                registration_url: Some(String::new()),
                ..extra("2027-02-10T17:00:00Z")
            },
        ],
        ..TrainingsSettings::default()
    });
    let feb = cal.sessions_between(utc(2027, 2, 1, 0, 0), utc(2027, 3, 1, 0, 0));
    assert_eq!(feb.len(), 2);
    let (a, b) = (&feb[0], &feb[1]);
    assert_eq!(a.uid, format!("training-kickoff-2027@{DOMAIN}"));
    assert!(a.extra && !a.cancelled);
    assert_eq!(a.start.to_rfc3339(), "2027-02-03T11:00:00-06:00");
    assert_eq!(local_time(&a.end), hm(12, 0));
    assert_eq!(a.topic.as_deref(), Some("Intro for new staff"));
    assert_eq!(a.location, "Online");
    assert_eq!(a.title, "Safe Harbor training for youth workers");
    assert_eq!(
        a.registration_url.as_deref(),
        Some("https://example.org/register")
    );

    assert_eq!(b.uid, format!("training-extra-20270210T170000Z@{DOMAIN}"));
    assert_eq!(local_time(&b.start), hm(11, 0));
    assert_eq!(b.registration_url, None);
    assert_eq!(b.location, TrainingsSettings::default().location);
    assert_eq!(cal.session_on(d(2027, 2, 10)).as_ref(), Some(b));

    // Extras are merged into start order with recurring sessions.
    let next = cal.upcoming(utc(2027, 1, 21, 0, 0), 3);
    let uids: Vec<_> = next.iter().map(|s| s.uid.as_str()).collect();
    assert_eq!(
        uids,
        vec![
            a.uid.as_str(),
            b.uid.as_str(),
            "training-20270317@lists.example.org"
        ]
    );
    // Recurring sessions keep the calendar-wide link.
    assert_eq!(
        next[2].registration_url.as_deref(),
        Some("https://example.org/register")
    );
}

#[test]
fn extras_on_dst_transition_days() {
    let err = error(&with_extras(vec![extra("2027-03-14T02:30")]));
    assert_eq!(err.key(), "trainings.extra[0].start");
    assert!(err.problem().contains("does not exist"), "{err}");

    // 01:30 happens twice on fall-back day; the earlier (CDT) one is used.
    let cal = calendar(&with_extras(vec![extra("2027-11-07T01:30")]));
    let s = cal.session_on(d(2027, 11, 7)).expect("extra exists");
    assert_eq!(s.start.with_timezone(&Utc), utc(2027, 11, 7, 6, 30));
    assert_eq!(s.start.offset().fix().local_minus_utc(), -5 * 3600);
    assert_eq!(s.end - s.start, TimeDelta::minutes(90));
}

#[test]
fn extra_errors_name_the_key() {
    let cases: Vec<(Vec<ExtraSettings>, &str, &str)> = vec![
        (
            vec![extra("Feb 3 at 11")],
            "trainings.extra[0].start",
            "expected RFC 3339",
        ),
        (
            vec![extra("2027-02-03T11:00"), extra("2027-02-03T17:00:00Z")],
            "trainings.extra[1].start",
            "UID",
        ),
        (
            vec![ExtraSettings {
                id: Some("has space".into()),
                ..extra("2027-02-03T11:00")
            }],
            "trainings.extra[0].id",
            "letters",
        ),
        (
            vec![ExtraSettings {
                id: Some("20270120".into()),
                ..extra("2027-02-03T11:00")
            }],
            "trainings.extra[0].id",
            "clash",
        ),
        (
            vec![ExtraSettings {
                duration: Some("8d".into()),
                ..extra("2027-02-03T11:00")
            }],
            "trainings.extra[0].duration",
            "7 days",
        ),
        (
            vec![ExtraSettings {
                registration_url: Some("javascript:alert(1)".into()),
                ..extra("2027-02-03T11:00")
            }],
            "trainings.extra[0].registration_url",
            "http",
        ),
    ];
    for (extras, key, problem) in cases {
        let err = error(&with_extras(extras));
        assert_eq!(err.key(), key, "{err}");
        assert!(err.problem().contains(problem), "{err}");
    }
}

#[test]
fn fingerprint_changes_exactly_for_attendee_facing_edits() {
    let plain = calendar(&TrainingsSettings::default());
    let fp = |cal: &Calendar| {
        cal.session_on(d(2027, 5, 19))
            .expect("exists")
            .fingerprint()
    };
    let base = fp(&plain);
    let reworded = calendar(&with_changes(vec![ChangeSettings {
        description: Some("New wording".into()),
        ..change("2027-05-19")
    }]));
    assert_eq!(fp(&reworded), base);
    for edited in [
        ChangeSettings {
            cancelled: Some(true),
            ..change("2027-05-19")
        },
        ChangeSettings {
            start_time: Some("11:30".into()),
            ..change("2027-05-19")
        },
        ChangeSettings {
            duration: Some("2h".into()),
            ..change("2027-05-19")
        },
        ChangeSettings {
            location: Some("Online".into()),
            ..change("2027-05-19")
        },
        ChangeSettings {
            topic: Some("Topic".into()),
            ..change("2027-05-19")
        },
        ChangeSettings {
            title: Some("Other".into()),
            ..change("2027-05-19")
        },
    ] {
        let cal = calendar(&with_changes(vec![edited.clone()]));
        assert_ne!(fp(&cal), base, "{edited:?}");
    }
}

// -------------------------------------------------------------------- ics

/// Joins folded lines back together, checking the physical-line rules.
fn unfold(ics: &str) -> Vec<String> {
    assert!(ics.ends_with("\r\n"), "must end with CRLF");
    let body = &ics[..ics.len() - 2];
    let mut lines: Vec<String> = Vec::new();
    for physical in body.split("\r\n") {
        assert!(
            !physical.contains('\n') && !physical.contains('\r'),
            "bare LF/CR: {physical:?}"
        );
        assert!(
            physical.len() <= 75,
            "{} octets: {physical:?}",
            physical.len()
        );
        match physical.strip_prefix(' ') {
            Some(rest) => lines
                .last_mut()
                .expect("continuation follows a line")
                .push_str(rest),
            None => lines.push(physical.to_owned()),
        }
    }
    lines
}

fn unescape(value: &str) -> String {
    let mut out = String::new();
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n' | 'N') => out.push('\n'),
                Some(other) => out.push(other),
                None => panic!("dangling backslash in {value:?}"),
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// (calendar-level properties, one map per VEVENT).
type Parsed = (BTreeMap<String, String>, Vec<BTreeMap<String, String>>);

fn parse_ics(ics: &str) -> Parsed {
    let mut top = BTreeMap::new();
    let mut events = Vec::new();
    let mut current: Option<BTreeMap<String, String>> = None;
    for line in unfold(ics) {
        let (name, value) = line.split_once(':').expect("NAME:value");
        match (name, value) {
            ("BEGIN", "VEVENT") => current = Some(BTreeMap::new()),
            ("END", "VEVENT") => events.push(current.take().expect("inside VEVENT")),
            _ => {
                let map = current.as_mut().unwrap_or(&mut top);
                assert!(
                    map.insert(name.to_owned(), value.to_owned()).is_none(),
                    "dup {name}"
                );
            }
        }
    }
    (top, events)
}

fn sample_sessions() -> Vec<Session> {
    let cal = calendar(&TrainingsSettings {
        registration_url: "https://example.org/register?event=safe-harbor&x=1".into(),
        description: format!(
            "Free; registration required, space limited. Back\\slash.\nSecond line: {}",
            "Long text about the training, with commas; semicolons — and dashes. ".repeat(4)
        ),
        change: vec![
            ChangeSettings {
                cancelled: Some(true),
                ..change("2027-03-17")
            },
            ChangeSettings {
                topic: Some("Labor trafficking".into()),
                ..change("2027-01-20")
            },
        ],
        ..TrainingsSettings::default()
    });
    cal.sessions_between(utc(2027, 1, 1, 0, 0), utc(2027, 4, 1, 0, 0))
}

#[test]
fn ics_publish_round_trips_through_a_hand_parser() {
    let sessions = sample_sessions();
    assert_eq!(sessions.len(), 2);
    let events: Vec<IcsEvent> = sessions
        .iter()
        .enumerate()
        .map(|(i, s)| IcsEvent {
            session: s,
            sequence: i as u32 + 1,
        })
        .collect();
    let stamp = utc(2026, 12, 1, 8, 0);
    let out = ics::render(
        &events,
        Method::Publish,
        stamp,
        "-//Safe Harbor//harborlist//EN",
    );
    assert!(out.starts_with("BEGIN:VCALENDAR\r\nVERSION:2.0\r\n"));
    assert!(out.ends_with("END:VCALENDAR\r\n"));
    assert!(out.contains("\r\n "), "the long DESCRIPTION must be folded");

    let (top, vevents) = parse_ics(&out);
    assert_eq!(top["METHOD"], "PUBLISH");
    assert_eq!(top["CALSCALE"], "GREGORIAN");
    assert_eq!(top["PRODID"], "-//Safe Harbor//harborlist//EN");
    assert_eq!(vevents.len(), 2);

    let jan = &vevents[0];
    assert_eq!(jan["UID"], format!("training-20270120@{DOMAIN}"));
    assert_eq!(jan["DTSTAMP"], "20261201T080000Z");
    assert_eq!(jan["SEQUENCE"], "1");
    assert_eq!(jan["DTSTART"], "20270120T170000Z");
    assert_eq!(jan["DTEND"], "20270120T183000Z");
    assert_eq!(
        unescape(&jan["SUMMARY"]),
        "Safe Harbor training for youth workers — Labor trafficking"
    );
    assert_eq!(
        jan["LOCATION"],
        r"LSS/Children's Home Society\, 1605 Eustis Street\, St Paul\, MN"
    );
    assert_eq!(unescape(&jan["LOCATION"]), sessions[0].location);
    assert_eq!(unescape(&jan["DESCRIPTION"]), sessions[0].description);
    assert!(jan["DESCRIPTION"].contains(r"Free\; registration required\, space"));
    assert!(jan["DESCRIPTION"].contains(r"Back\\slash.\nSecond"));
    assert_eq!(
        jan["URL"],
        "https://example.org/register?event=safe-harbor&x=1"
    );
    assert_eq!(jan["STATUS"], "CONFIRMED");

    let mar = &vevents[1];
    assert_eq!(mar["DTSTART"], "20270317T160000Z", "CDT in March");
    assert_eq!(mar["SEQUENCE"], "2");
    assert_eq!(mar["STATUS"], "CANCELLED");
    assert_eq!(
        unescape(&mar["SUMMARY"]),
        "Safe Harbor training for youth workers"
    );
}

#[test]
fn ics_cancel_marks_every_event_cancelled() {
    let sessions = sample_sessions();
    let events = [IcsEvent {
        session: &sessions[0],
        sequence: 4,
    }];
    let out = ics::render(
        &events,
        Method::Cancel,
        utc(2027, 1, 2, 3, 4),
        "-//x//y//EN",
    );
    let (top, vevents) = parse_ics(&out);
    assert_eq!(top["METHOD"], "CANCEL");
    assert_eq!(vevents.len(), 1);
    assert_eq!(vevents[0]["STATUS"], "CANCELLED");
    assert_eq!(vevents[0]["SEQUENCE"], "4");
    assert_eq!(vevents[0]["UID"], sessions[0].uid);
    assert!(!out.contains("CONFIRMED"));
}

#[test]
fn ics_folding_never_splits_multibyte_characters() {
    let sessions = sample_sessions();
    let mut s = sessions[0].clone();
    s.description = "—é".repeat(100);
    s.registration_url = None;
    let out = ics::render(
        &[IcsEvent {
            session: &s,
            sequence: 0,
        }],
        Method::Publish,
        utc(2027, 1, 1, 0, 0),
        "p",
    );
    // `unfold` asserts the 75-octet limit; splitting a char would have made
    // `out` invalid UTF-8, which a String cannot hold, so check the content.
    let (_, vevents) = parse_ics(&out);
    assert_eq!(vevents[0]["DESCRIPTION"], s.description);
    assert!(!vevents[0].contains_key("URL"));
}

// ------------------------------------------------------------------ human

#[test]
fn human_wording_for_standard_and_daylight_time() {
    let cal = calendar(&TrainingsSettings::default());
    let jan = cal.session_on(d(2027, 1, 20)).expect("exists");
    assert_eq!(
        human::when(&jan),
        "Wednesday, January 20, 2027, 11:00 AM – 12:30 PM CST"
    );
    assert_eq!(human::date(&jan), "Wednesday, January 20, 2027");
    assert_eq!(human::time_range(&jan), "11:00 AM – 12:30 PM CST");
    let jul = cal.session_on(d(2027, 7, 21)).expect("exists");
    assert_eq!(
        human::when(&jul),
        "Wednesday, July 21, 2027, 11:00 AM – 12:30 PM CDT"
    );
}
