//! Tests of cron parsing and of fire times across the daylight-saving changes of
//! Europe/Madrid and America/New_York (2026: Madrid changes on March 29 and October 25,
//! New York on March 8 and November 1).

use jiff::Timestamp;
use jiff::tz::TimeZone;

use super::Cron;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn zone(name: &str) -> TimeZone {
    TimeZone::get(name).unwrap()
}

fn fires(cron: &str, tz: &str, from: &str, n: usize) -> Vec<String> {
    let cron = Cron::parse(cron).unwrap();
    cron.upcoming(&zone(tz), at(from), n)
        .into_iter()
        .map(|t| t.to_string())
        .collect()
}

/// The gaps between `n` consecutive fire times, in minutes.
fn gaps(cron: &str, tz: &str, from: &str, n: usize) -> Vec<i64> {
    let cron = Cron::parse(cron).unwrap();
    let times = cron.upcoming(&zone(tz), at(from), n);
    times
        .windows(2)
        .map(|w| (w[1].as_second() - w[0].as_second()) / 60)
        .collect()
}

#[test]
fn parses_fields_ranges_steps_lists_and_names() {
    let cron = Cron::parse("*/15 9-17 * JAN,mar-may mon-fri").unwrap();
    assert_eq!(cron.minutes, 1 | 1 << 15 | 1 << 30 | 1 << 45);
    assert_eq!(cron.hours, (9..=17).fold(0, |m, h| m | 1 << h));
    assert_eq!(cron.months, 1 << 1 | 1 << 3 | 1 << 4 | 1 << 5);
    assert_eq!(cron.weekdays, (1..=5).fold(0, |m, d| m | 1 << d));
    assert_eq!(cron.seconds, 1, "5 fields fire at second 0");
    assert!(!cron.elapsed && cron.any_day && !cron.any_weekday);

    let six = Cron::parse("10,40 0 12 1 1 7").unwrap();
    assert_eq!(six.seconds, 1 << 10 | 1 << 40);
    assert_eq!(six.weekdays, 1, "7 is Sunday, as 0 is");
    assert_eq!(
        Cron::parse("5/20 * * * *").unwrap().minutes,
        1 << 5 | 1 << 25 | 1 << 45
    );
    assert_eq!(
        Cron::parse("0-10/5 * * * *").unwrap().minutes,
        1 | 1 << 5 | 1 << 10
    );
    assert_eq!(
        Cron::parse("@daily")
            .unwrap()
            .next_civil(civil("2026-01-01T00:00:01")),
        Some(civil("2026-01-02T00:00:00"))
    );
    assert_eq!(Cron::parse(" @hourly ").unwrap().as_str(), "@hourly");
}

fn civil(text: &str) -> jiff::civil::DateTime {
    text.parse().unwrap()
}

#[test]
fn refuses_bad_expressions_naming_the_field() {
    let error = |text: &str| Cron::parse(text).unwrap_err().to_string();
    assert!(
        error("* * * *").contains("has 4 fields"),
        "{}",
        error("* * * *")
    );
    assert!(error("* * * * * * *").contains("has 7 fields"));
    assert_eq!(error("60 * * * *"), "minute field `60`: 60 is outside 0-59");
    assert_eq!(error("* 24 * * *"), "hour field `24`: 24 is outside 0-23");
    assert_eq!(
        error("* * 0 * *"),
        "day-of-month field `0`: 0 is outside 1-31"
    );
    assert_eq!(error("* * * 13 *"), "month field `13`: 13 is outside 1-12");
    assert_eq!(
        error("* * * * 8"),
        "day-of-week field `8`: 8 is outside 0-7"
    );
    assert_eq!(
        error("* * * foo *"),
        "month field `foo`: `foo` is not a number or a name"
    );
    assert_eq!(
        error("*/0 * * * *"),
        "minute field `*/0`: step `0` is not a whole number above 0"
    );
    assert_eq!(
        error("5-1 * * * *"),
        "minute field `5-1`: range `5-1` runs backwards"
    );
    assert_eq!(
        error("1,,2 * * * *"),
        "minute field `1,,2`: a value is missing"
    );
    assert_eq!(error("0 0 30 2 *"), "`0 0 30 2 *` never matches a date");
    assert!(error("@often").contains("not a cron macro"));
}

#[test]
fn day_of_month_and_weekday_combine_as_in_vixie_cron() {
    // Both restricted: either matches (the 13th, or any Friday).
    let either = Cron::parse("0 0 13 * fri").unwrap();
    let next = |c: &Cron, from: &str| c.next_civil(civil(from)).unwrap().to_string();
    assert_eq!(next(&either, "2026-03-01T00:00:01"), "2026-03-06T00:00:00");
    assert_eq!(next(&either, "2026-03-12T00:00:01"), "2026-03-13T00:00:00");
    // One is `*`: both must match (every Friday).
    let fridays = Cron::parse("0 0 * * 5").unwrap();
    assert_eq!(next(&fridays, "2026-03-07T00:00:00"), "2026-03-13T00:00:00");
    // Leap day only.
    let leap = Cron::parse("0 12 29 2 *").unwrap();
    assert_eq!(next(&leap, "2026-01-01T00:00:00"), "2028-02-29T12:00:00");
}

#[test]
fn seconds_field_fires_within_the_minute() {
    assert_eq!(
        fires("*/20 * * * * *", "UTC", "2026-05-01T10:00:05Z", 3),
        [
            "2026-05-01T10:00:20Z",
            "2026-05-01T10:00:40Z",
            "2026-05-01T10:01:00Z"
        ]
    );
}

#[test]
fn fire_times_are_strictly_after_the_given_instant() {
    assert_eq!(
        fires("0 * * * *", "UTC", "2026-05-01T10:00:00Z", 1),
        ["2026-05-01T11:00:00Z"]
    );
    assert_eq!(
        fires("0 * * * *", "UTC", "2026-05-01T09:59:59.999Z", 1),
        ["2026-05-01T10:00:00Z"]
    );
}

#[test]
fn madrid_daily_0230_runs_once_on_both_change_days() {
    // Spring forward: 02:30 does not exist on March 29; it runs at 03:00 CEST (01:00Z).
    assert_eq!(
        fires("30 2 * * *", "Europe/Madrid", "2026-03-27T12:00:00Z", 3),
        [
            "2026-03-28T01:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:30:00Z"
        ]
    );
    // Fall back: 02:30 happens twice on October 25; it runs at the first (CEST).
    assert_eq!(
        fires("30 2 * * *", "Europe/Madrid", "2026-10-24T12:00:00Z", 3),
        [
            "2026-10-25T00:30:00Z",
            "2026-10-26T01:30:00Z",
            "2026-10-27T01:30:00Z"
        ]
    );
    // A host asking right after the first 02:30 does not get the second.
    assert_eq!(
        fires("30 2 * * *", "Europe/Madrid", "2026-10-25T00:30:00Z", 1),
        ["2026-10-26T01:30:00Z"]
    );
}

#[test]
fn new_york_daily_0230_and_0130_run_once_on_both_change_days() {
    assert_eq!(
        fires("30 2 * * *", "America/New_York", "2026-03-07T00:00:00Z", 3),
        [
            "2026-03-07T07:30:00Z",
            "2026-03-08T07:00:00Z",
            "2026-03-09T06:30:00Z"
        ]
    );
    // 02:30 is not repeated in New York (01:00-02:00 is): one run in EST.
    assert_eq!(
        fires("30 2 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T07:30:00Z", "2026-11-02T07:30:00Z"]
    );
    // 01:30 is repeated: the first (EDT) only.
    assert_eq!(
        fires("30 1 * * *", "America/New_York", "2026-10-31T12:00:00Z", 2),
        ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
    );
}

#[test]
fn hourly_neither_skips_nor_doubles_across_changes() {
    for (tz, spring, fall) in [
        (
            "Europe/Madrid",
            "2026-03-28T20:00:00Z",
            "2026-10-24T20:00:00Z",
        ),
        (
            "America/New_York",
            "2026-03-08T02:00:00Z",
            "2026-11-01T01:00:00Z",
        ),
    ] {
        for from in [spring, fall] {
            assert_eq!(
                gaps("0 * * * *", tz, from, 12),
                vec![60; 11],
                "{tz} from {from}"
            );
            assert_eq!(
                gaps("30 * * * *", tz, from, 12),
                vec![60; 11],
                "{tz} from {from}"
            );
        }
    }
    // The repeated hour fires twice in local time: 02:00 CEST and 02:00 CET.
    assert_eq!(
        fires("0 * * * *", "Europe/Madrid", "2026-10-24T23:30:00Z", 3),
        [
            "2026-10-25T00:00:00Z",
            "2026-10-25T01:00:00Z",
            "2026-10-25T02:00:00Z"
        ]
    );
}

#[test]
fn every_15_minutes_neither_skips_nor_doubles_across_changes() {
    for (tz, spring, fall) in [
        (
            "Europe/Madrid",
            "2026-03-28T23:00:00Z",
            "2026-10-24T23:00:00Z",
        ),
        (
            "America/New_York",
            "2026-03-08T05:00:00Z",
            "2026-11-01T04:00:00Z",
        ),
    ] {
        for from in [spring, fall] {
            assert_eq!(
                gaps("*/15 * * * *", tz, from, 20),
                vec![15; 19],
                "{tz} from {from}"
            );
        }
    }
    // Asked from inside either occurrence of the repeated hour.
    assert_eq!(
        fires("*/15 * * * *", "Europe/Madrid", "2026-10-25T00:50:00Z", 2),
        ["2026-10-25T01:00:00Z", "2026-10-25T01:15:00Z"]
    );
    assert_eq!(
        fires("*/15 * * * *", "Europe/Madrid", "2026-10-25T01:10:00Z", 1),
        ["2026-10-25T01:15:00Z"]
    );
}

#[test]
fn named_hours_in_a_gap_run_once_at_its_end() {
    // 02:00 and 02:30 both fall in the gap and 03:00 is the end: one run, at 03:00 CEST.
    assert_eq!(
        fires("0,30 2,3 * * *", "Europe/Madrid", "2026-03-29T00:00:00Z", 3),
        [
            "2026-03-29T01:00:00Z",
            "2026-03-29T01:30:00Z",
            "2026-03-30T00:00:00Z"
        ]
    );
}
