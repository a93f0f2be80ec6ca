//! The calendar's arithmetic against the State Council's notices.

use super::*;
use chrono::{DateTime, FixedOffset, TimeDelta};

use proptest::prelude::*;

fn shipped() -> Calendar {
    Calendar::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar"))
        .unwrap_or_else(|e| panic!("{e:?}"))
}

fn d(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

#[test]
fn ships_2019_to_2026() {
    assert_eq!(
        shipped().years().collect::<Vec<_>>(),
        (2019..=2026).collect::<Vec<_>>()
    );
}

#[test]
fn kai_canguan_accepted_2019_10_21_is_due_2019_11_04() {
    assert_eq!(
        shipped().add_working_days(d("2019-10-21"), 10),
        Ok(d("2019-11-04"))
    );
}

#[test]
fn national_day_2019_with_make_up_days() {
    let cal = shipped();
    assert_eq!(
        cal.is_workday(d("2019-09-29")),
        Ok(true),
        "Sunday make-up day"
    );
    assert_eq!(
        cal.is_workday(d("2019-10-12")),
        Ok(true),
        "Saturday make-up day"
    );
    assert_eq!(cal.is_workday(d("2019-10-07")), Ok(false));
    // Friday 2019-09-27 + 1 working day is the make-up Sunday 2019-09-29.
    assert_eq!(
        cal.add_working_days(d("2019-09-27"), 1),
        Ok(d("2019-09-29"))
    );
    // 2019-09-30 + 1 working day skips the seven-day holiday.
    assert_eq!(
        cal.add_working_days(d("2019-09-30"), 1),
        Ok(d("2019-10-08"))
    );
}

#[test]
fn spring_festival_2020_extension_is_off() {
    let cal = shipped();
    assert_eq!(cal.is_workday(d("2020-01-31")), Ok(false));
    assert_eq!(
        cal.is_workday(d("2020-02-01")),
        Ok(false),
        "make-up day cancelled by the extension"
    );
    assert_eq!(
        cal.add_working_days(d("2020-01-23"), 1),
        Ok(d("2020-02-03"))
    );
}

#[test]
fn year_without_data_is_an_error_naming_it() {
    let cal = shipped();
    assert_eq!(
        cal.add_working_days(d("2026-12-25"), 10),
        Err(CalendarError::YearMissing(2027))
    );
}

#[test]
fn cross_year_make_up_day_comes_from_the_next_years_notice() {
    // The 2012 notice made Saturday 2011-12-31 a working day; a make-up day may sit in the previous year.
    let mut cal = Calendar::default();
    let y2011 = "year = 2011\nnotice = \"n\"\nsource = \"s\"\ndays = []\n";
    let y2012 = "year = 2012\nnotice = \"n\"\nsource = \"s\"\ndays = [\n { date = 2011-12-31, off = false, name = \"元旦\" },\n { date = 2012-01-02, off = true, name = \"元旦\" },\n { date = 2012-01-03, off = true, name = \"元旦\" },\n]\n";
    cal.add_year(Path::new("2011.toml"), y2011).unwrap();
    cal.add_year(Path::new("2012.toml"), y2012).unwrap();
    assert_eq!(cal.is_workday(d("2011-12-31")), Ok(true));
    assert_eq!(
        cal.add_working_days(d("2011-12-30"), 1),
        Ok(d("2011-12-31"))
    );
    assert_eq!(
        cal.add_working_days(d("2011-12-31"), 1),
        Ok(d("2012-01-04"))
    );
}

#[test]
fn make_up_day_on_a_weekday_is_refused_with_its_line() {
    let mut cal = Calendar::default();
    let text = "year = 2030\nnotice = \"n\"\nsource = \"s\"\ndays = [\n { date = 2030-01-02, off = false, name = \"x\" },\n]\n";
    let errs = cal.add_year(Path::new("2030.toml"), text).unwrap_err();
    assert_eq!(errs[0].line, 5, "{errs:?}");
}

fn year_file(year: i32, days: &str) -> String {
    format!("year = {year}\nnotice = \"n\"\nsource = \"s\"\ndays = [\n{days}]\n")
}

fn refusal(year: i32, days: &str) -> Vec<String> {
    let mut cal = Calendar::default();
    let errs = cal
        .add_year(Path::new(&format!("{year}.toml")), &year_file(year, days))
        .unwrap_err();
    assert_eq!(cal.years().count(), 0, "a refused file adds nothing");
    assert!(cal.overrides.is_empty(), "a refused file adds no day");
    errs.into_iter().map(|p| p.message).collect()
}

#[test]
fn loader_refuses_dates_outside_the_files_year() {
    let errs = refusal(2030, " { date = 2031-01-01, off = true, name = \"x\" },\n");
    assert!(
        errs[0].contains("2031-01-01 is outside year 2030"),
        "{errs:?}"
    );
    let errs = refusal(2030, " { date = 2029-12-24, off = true, name = \"x\" },\n");
    assert!(
        errs[0].contains("2029-12-24 is outside year 2030"),
        "{errs:?}"
    );
    // The last week of the year before is the notice's to arrange.
    let mut cal = Calendar::default();
    cal.add_year(
        Path::new("2030.toml"),
        &year_file(
            2030,
            " { date = 2029-12-29, off = false, name = \"元旦\" },\n",
        ),
    )
    .unwrap();
}

#[test]
fn loader_refuses_duplicate_and_unsorted_days() {
    let errs = refusal(
        2030,
        " { date = 2030-01-01, off = true, name = \"x\" },\n { date = 2030-01-01, off = true, name = \"x\" },\n",
    );
    assert_eq!(errs, ["2030-01-01 is listed twice"]);
    let errs = refusal(
        2030,
        " { date = 2030-02-04, off = true, name = \"x\" },\n { date = 2030-01-01, off = true, name = \"x\" },\n",
    );
    assert_eq!(
        errs,
        ["2030-01-01 is out of date order (after 2030-02-04): keep days sorted"]
    );
}

#[test]
fn loader_refuses_a_year_without_its_notice_cited() {
    let mut cal = Calendar::default();
    let text = "year = 2030\nnotice = \"\"\nsource = \" \"\ndays = []\n";
    let errs = cal.add_year(Path::new("2030.toml"), text).unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:?}");
    assert_eq!((errs[0].line, errs[1].line), (2, 3));
    assert!(errs[0].message.starts_with("notice is empty"), "{errs:?}");
    let mut cal = Calendar::default();
    let text = "year = 2030\nnotice = \"n\"\nsource = \"s\"\ndays = []\n";
    let errs = cal.add_year(Path::new("2031.toml"), text).unwrap_err();
    assert_eq!(
        errs[0].message,
        "file declares year 2030 but is named 2031.toml"
    );
}

#[test]
fn loader_refuses_a_day_two_notices_arrange_differently() {
    let mut cal = Calendar::default();
    cal.add_year(
        Path::new("2029.toml"),
        &year_file(2029, " { date = 2029-12-29, off = true, name = \"x\" },\n"),
    )
    .unwrap();
    let errs = cal
        .add_year(
            Path::new("2030.toml"),
            &year_file(
                2030,
                " { date = 2029-12-29, off = false, name = \"元旦\" },\n",
            ),
        )
        .unwrap_err();
    assert_eq!(
        errs[0].message,
        "2029-12-29 is a make-up working day here but a day off in 2029.toml"
    );
    let errs = cal
        .add_year(Path::new("2029.toml"), &year_file(2029, ""))
        .unwrap_err();
    assert_eq!(errs[0].message, "year 2029 is defined twice");
}

#[test]
fn every_shipped_year_cites_its_notice_and_has_holidays_and_make_up_days() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar");
    for year in 2019..=2026 {
        let text = std::fs::read_to_string(dir.join(format!("{year}.toml"))).unwrap();
        let file: YearFile = toml::from_str(&text).unwrap();
        assert!(
            file.notice
                .get_ref()
                .contains(&format!("关于{year}年部分节假日安排的通知")),
            "{year}: {}",
            file.notice.get_ref()
        );
        assert!(file.source.get_ref().starts_with("https://www.gov.cn/"));
        let offs = file.days.iter().filter(|d| d.get_ref().off).count();
        let make_ups = file.days.len() - offs;
        assert!(
            offs >= 20 && make_ups >= 4,
            "{year}: {offs} off, {make_ups} make-up"
        );
    }
}

#[test]
fn late_december_needs_the_next_years_notice() {
    let cal = shipped();
    assert_eq!(cal.is_workday(d("2026-12-24")), Ok(true));
    assert_eq!(
        cal.is_workday(d("2026-12-25")),
        Err(CalendarError::YearMissing(2027)),
        "the 2027 notice may still arrange 2026-12-25..31"
    );
    assert_eq!(
        cal.is_workday(d("2018-12-28")),
        Err(CalendarError::YearMissing(2018))
    );
}

#[test]
fn shipped_cross_year_make_up_day_2018_12_29_comes_from_the_2019_notice() {
    // 2019.toml arranges 2018-12-29 (Sat) as a working day and 12-30, 12-31 (Mon) off;
    // 2018 itself is not shipped, so it takes a 2018 file to ask about the rest of 2018.
    let mut cal = Calendar::default();
    cal.add_year(Path::new("2018.toml"), &year_file(2018, ""))
        .unwrap();
    assert_eq!(
        cal.is_workday(d("2018-12-29")),
        Err(CalendarError::YearMissing(2019)),
        "without the 2019 notice, 2018-12-29 is not guessed to be a Saturday off"
    );
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/calendar/2019.toml");
    cal.add_year(&path, &std::fs::read_to_string(&path).unwrap())
        .unwrap();
    assert_eq!(cal.is_workday(d("2018-12-29")), Ok(true));
    assert_eq!(cal.is_workday(d("2018-12-31")), Ok(false), "a Monday off");
    assert_eq!(
        cal.add_working_days(d("2018-12-28"), 1),
        Ok(d("2018-12-29"))
    );
    assert_eq!(
        cal.add_working_days(d("2018-12-28"), 2),
        Ok(d("2019-01-02"))
    );
    assert_eq!(
        cal.working_days_between(d("2018-12-27"), d("2019-01-02")),
        Ok(3)
    );
}

fn t(s: &str) -> DateTime<FixedOffset> {
    DateTime::parse_from_rfc3339(s).unwrap_or_else(|e| panic!("{s}: {e}"))
}

fn china() -> FixedOffset {
    FixedOffset::east_opt(8 * 3600).unwrap()
}

#[test]
fn limits_read_their_units_and_serialise_as_canonical_text() {
    for (text, limit) in [
        ("10wd", Limit::working_days(10)),
        ("10个工作日", Limit::working_days(10)),
        ("10d", Limit::calendar_days(10)),
        ("10天", Limit::calendar_days(10)),
        ("24h", Limit::hours(24)),
        ("24小时", Limit::hours(24)),
        ("0wd", Limit::working_days(0)),
    ] {
        assert_eq!(text.parse(), Ok(limit), "{text}");
    }
    for bad in ["10", "wd", "-1wd", "1.5h", "10 weeks", ""] {
        assert!(bad.parse::<Limit>().is_err(), "{bad:?} accepted");
    }
    assert_eq!(Limit::hours(24).to_string(), "24h");
    assert_eq!(
        serde_json::to_string(&Limit::working_days(10)).unwrap(),
        "\"10wd\""
    );
    assert_eq!(
        serde_json::from_str::<Limit>("\"3d\"").unwrap(),
        Limit::calendar_days(3)
    );
    assert!(serde_json::from_str::<Limit>("\"3x\"").is_err());
}

#[test]
fn kai_canguan_deadline_is_24_00_of_2019_11_04_in_the_halls_zone() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let due = t("2019-11-05T00:00:00+08:00");
    assert_eq!(
        hall.deadline(t("2019-10-21T15:30:00+08:00"), Limit::working_days(10)),
        Ok(due)
    );
    assert_eq!(hall.last_day(due), d("2019-11-04"));
    // 07:00 in the hall is still the evening before in UTC: the hall's day counts.
    let utc = hall
        .deadline(t("2019-10-20T23:00:00Z"), Limit::working_days(10))
        .unwrap();
    assert_eq!(utc, due);
    assert_eq!(utc.offset(), &china(), "answered in the hall's offset");
    assert_eq!(
        hall.deadline(t("2019-10-21T15:30:00+08:00"), Limit::working_days(0)),
        Ok(t("2019-10-22T00:00:00+08:00")),
        "即办件: the close of the day of acceptance"
    );
}

#[test]
fn national_day_2019_instants_count_the_make_up_sunday_and_saturday() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    // 09-30 (Mon) is day 0; 10-01..07 off; 10-08, 10-09, 10-10 are working days 1..3.
    assert_eq!(
        hall.deadline(t("2019-09-30T09:00:00+08:00"), Limit::working_days(3)),
        Ok(t("2019-10-11T00:00:00+08:00"))
    );
    // From Friday 09-27: the make-up Sunday 09-29 is working day 1, 09-30 day 2, 10-08 day 3.
    for (n, last) in [(1, "2019-09-29"), (2, "2019-09-30"), (3, "2019-10-08")] {
        let due = hall
            .deadline(t("2019-09-27T11:00:00+08:00"), Limit::working_days(n))
            .unwrap();
        assert_eq!(hall.last_day(due), d(last), "{n} working days");
    }
    // From Thursday 10-10: Friday 10-11, then the make-up Saturday 10-12.
    let due = hall
        .deadline(t("2019-10-10T11:00:00+08:00"), Limit::working_days(2))
        .unwrap();
    assert_eq!(hall.last_day(due), d("2019-10-12"));
}

#[test]
fn spring_festival_2020_extension_holds_working_and_calendar_day_limits() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let accepted = t("2020-01-23T09:00:00+08:00");
    // 01-24..02-02 off, 02-01 no longer a make-up day: the next working day is 02-03.
    assert_eq!(
        hall.deadline(accepted, Limit::working_days(1)),
        Ok(t("2020-02-04T00:00:00+08:00"))
    );
    // 3 calendar days end on 01-26, a day off: moved to the close of 02-03 (民法典 第二百零三条).
    assert_eq!(
        hall.deadline(accepted, Limit::calendar_days(3)),
        Ok(t("2020-02-04T00:00:00+08:00"))
    );
    // A calendar-day limit ending on a working day stays put, weekends counted.
    assert_eq!(
        hall.deadline(t("2020-02-05T09:00:00+08:00"), Limit::calendar_days(5)),
        Ok(t("2020-02-11T00:00:00+08:00"))
    );
    // The Sunday 01-19 is still a make-up working day.
    let due = hall
        .deadline(t("2020-01-17T09:00:00+08:00"), Limit::working_days(1))
        .unwrap();
    assert_eq!(hall.last_day(due), d("2020-01-19"));
}

#[test]
fn hours_elapse_on_working_days_only() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let h = |from: &str, n| hall.deadline(t(from), Limit::hours(n));
    // Friday 10:00 + 24 h: 14 h on Friday, the weekend skipped, 10 h on Monday.
    assert_eq!(
        h("2019-10-18T10:00:00+08:00", 24),
        Ok(t("2019-10-21T10:00:00+08:00"))
    );
    // Across National Day 2019: 14 h on 09-30, 10-01..07 skipped, 10 h on 10-08.
    assert_eq!(
        h("2019-09-30T10:00:00+08:00", 24),
        Ok(t("2019-10-08T10:00:00+08:00"))
    );
    // Across Spring Festival 2020 with its extension; and hours that end exactly at 24:00
    // of the last working day end there, not after the holiday.
    assert_eq!(
        h("2020-01-23T16:00:00+08:00", 9),
        Ok(t("2020-02-03T01:00:00+08:00"))
    );
    assert_eq!(
        h("2020-01-23T16:00:00+08:00", 8),
        Ok(t("2020-01-24T00:00:00+08:00"))
    );
    // The make-up Saturday 2019-10-12 counts; the Sunday after does not.
    assert_eq!(
        h("2019-10-12T10:00:00+08:00", 24),
        Ok(t("2019-10-14T10:00:00+08:00"))
    );
    // Accepted on a holiday: the hours start with the next working day.
    assert_eq!(
        h("2019-10-03T10:00:00+08:00", 2),
        Ok(t("2019-10-08T02:00:00+08:00"))
    );
    assert_eq!(
        h("2019-10-03T10:00:00+08:00", 0),
        Ok(t("2019-10-03T10:00:00+08:00"))
    );
}

#[test]
fn reckoning_across_a_missing_year_counts_it_monday_to_friday_and_names_it() {
    let cal = shipped();
    // 2026-12-06 (Sunday) + 20 working days: Dec 7–11, 14–18, 21–25, 28–31 (19), then
    // Friday 2027-01-01, a working day when 2027 is counted Monday–Friday.
    let r = cal
        .reckon(|c| c.add_working_days(d("2026-12-06"), 20))
        .unwrap();
    assert_eq!(r.value, d("2027-01-01"));
    assert_eq!(r.assumed, BTreeSet::from([2027]));
    assert!(r.provisional());
    // Within the loaded years nothing is assumed.
    let r = cal
        .reckon(|c| c.add_working_days(d("2026-12-06"), 10))
        .unwrap();
    assert_eq!((r.value, r.provisional()), (d("2026-12-18"), false));
    // Two missing years, each named; the loaded calendar itself assumes nothing.
    let r = cal
        .reckon(|c| c.add_working_days(d("2026-12-01"), 300))
        .unwrap();
    assert_eq!(r.assumed, BTreeSet::from([2027, 2028]));
    assert_eq!(
        cal.add_working_days(d("2026-12-06"), 20),
        Err(CalendarError::YearMissing(2027))
    );
    // A year before the last loaded one is a gap or a clock set back, not a notice to come.
    assert_eq!(
        cal.reckon(|c| c.add_working_days(d("2018-12-03"), 5)).err(),
        Some(CalendarError::YearMissing(2018))
    );
    // A limit reaching years past the bound is refused, naming the year.
    assert_eq!(
        cal.reckon(|c| c.add_working_days(d("2026-12-01"), 2000))
            .err(),
        Some(CalendarError::YearMissing(2030))
    );
}

#[test]
fn a_deadline_into_a_year_without_data_names_the_year() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    assert_eq!(
        hall.deadline(t("2026-12-20T10:00:00+08:00"), Limit::working_days(30)),
        Err(CalendarError::YearMissing(2027))
    );
    assert_eq!(
        hall.deadline(t("2026-12-24T20:00:00+08:00"), Limit::hours(8)),
        Err(CalendarError::YearMissing(2027)),
        "12-25 may still be arranged by the 2027 notice"
    );
    assert_eq!(
        hall.deadline(t("2026-12-24T10:00:00+08:00"), Limit::hours(8)),
        Ok(t("2026-12-24T18:00:00+08:00"))
    );
}

#[test]
fn a_supplement_pause_moves_the_deadline_by_exactly_the_paused_working_days() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let accepted = t("2019-10-21T10:00:00+08:00");
    let ten = Limit::working_days(10);
    let pause = |from: &str, to: &str| Pause {
        from: t(from),
        to: t(to),
    };
    // Paused Wednesday 15:00 to Friday 11:00: Thursday and Friday are paused.
    let p = [pause(
        "2019-10-23T15:00:00+08:00",
        "2019-10-25T11:00:00+08:00",
    )];
    assert_eq!(hall.paused_working_days(&p), Ok(2));
    assert_eq!(
        hall.deadline_with_pauses(accepted, ten, &p),
        Ok(t("2019-11-07T00:00:00+08:00")),
        "11-04 moved by two working days"
    );
    // Friday 16:00 to Monday 09:00: only Monday is a paused working day.
    let p = [pause(
        "2019-10-25T16:00:00+08:00",
        "2019-10-28T09:00:00+08:00",
    )];
    assert_eq!(hall.paused_working_days(&p), Ok(1));
    assert_eq!(
        hall.deadline_with_pauses(accepted, ten, &p),
        Ok(t("2019-11-06T00:00:00+08:00"))
    );
    // A pause within one day moves nothing.
    let p = [pause(
        "2019-10-23T09:00:00+08:00",
        "2019-10-23T17:00:00+08:00",
    )];
    assert_eq!(hall.paused_working_days(&p), Ok(0));
    assert_eq!(
        hall.deadline_with_pauses(accepted, ten, &p),
        hall.deadline(accepted, ten)
    );
    // Overlapping pauses (补正 and 特别程序 at once) count once.
    let p = [
        pause("2019-10-23T15:00:00+08:00", "2019-10-25T11:00:00+08:00"),
        pause("2019-10-24T09:00:00+08:00", "2019-10-25T17:00:00+08:00"),
    ];
    assert_eq!(hall.paused_working_days(&p), Ok(2));
    assert_eq!(
        hall.deadline_with_pauses(accepted, ten, &p),
        Ok(t("2019-11-07T00:00:00+08:00"))
    );
    // A pause that starts on the last day moves it: 11-04 16:00 to 11-05 10:00 pauses 11-05.
    let p = [pause(
        "2019-11-04T16:00:00+08:00",
        "2019-11-05T10:00:00+08:00",
    )];
    assert_eq!(
        hall.deadline_with_pauses(accepted, ten, &p),
        Ok(t("2019-11-06T00:00:00+08:00"))
    );
    // A pause that starts once the time has run out does not revive it.
    let p = [pause(
        "2019-11-05T10:00:00+08:00",
        "2019-11-08T10:00:00+08:00",
    )];
    assert_eq!(
        hall.deadline_with_pauses(accepted, ten, &p),
        Ok(t("2019-11-05T00:00:00+08:00"))
    );
    // A pause over National Day counts the make-up Sunday and skips the holiday.
    let p = [pause(
        "2019-09-27T10:00:00+08:00",
        "2019-10-09T10:00:00+08:00",
    )];
    assert_eq!(
        hall.paused_working_days(&p),
        Ok(4),
        "09-29, 09-30, 10-08, 10-09"
    );
}

#[test]
fn pauses_move_hour_and_calendar_day_limits_by_their_own_measure() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    // 24 h from Friday 10:00 end Monday 10:00; paused Monday 09:00–11:00, they end at 12:00.
    let p = [Pause {
        from: t("2019-10-21T09:00:00+08:00"),
        to: t("2019-10-21T11:00:00+08:00"),
    }];
    assert_eq!(
        hall.deadline_with_pauses(t("2019-10-18T10:00:00+08:00"), Limit::hours(24), &p),
        Ok(t("2019-10-21T12:00:00+08:00"))
    );
    // 10 calendar days from 10-21 end 10-31; two paused days move them to Saturday 11-02,
    // and a day off moves the last day to Monday 11-04.
    let p = [Pause {
        from: t("2019-10-22T10:00:00+08:00"),
        to: t("2019-10-24T10:00:00+08:00"),
    }];
    let accepted = t("2019-10-21T10:00:00+08:00");
    assert_eq!(
        hall.deadline(accepted, Limit::calendar_days(10)),
        Ok(t("2019-11-01T00:00:00+08:00"))
    );
    assert_eq!(
        hall.deadline_with_pauses(accepted, Limit::calendar_days(10), &p),
        Ok(t("2019-11-05T00:00:00+08:00"))
    );
}

#[test]
fn working_days_elapsed_counts_working_days_that_have_ended() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let from = t("2019-09-30T10:00:00+08:00");
    let at = |s: &str| hall.working_days_elapsed(from, t(s));
    assert_eq!(at("2019-09-30T23:00:00+08:00"), Ok(0));
    assert_eq!(at("2019-10-08T12:00:00+08:00"), Ok(0), "10-08 not over yet");
    assert_eq!(at("2019-10-09T00:00:00+08:00"), Ok(1));
    assert_eq!(
        at("2019-10-11T00:00:00+08:00"),
        Ok(3),
        "at the 3-day deadline"
    );
    assert_eq!(at("2019-09-01T00:00:00+08:00"), Ok(0), "backwards");
}

#[test]
fn share_elapsed_and_the_instant_a_share_is_reached() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let accepted = t("2019-10-21T10:00:00+08:00");
    let ten = Limit::working_days(10);
    let share = |now: &str| hall.share_elapsed(accepted, ten, &[], t(now)).unwrap();
    assert_eq!(
        share("2019-10-21T18:00:00+08:00"),
        0.0,
        "day 0 is not counted"
    );
    assert_eq!(share("2019-10-29T00:00:00+08:00"), 0.5, "10-22..25, 10-28");
    assert_eq!(
        share("2019-10-27T12:00:00+08:00"),
        0.4,
        "the weekend does not count"
    );
    assert_eq!(share("2019-11-05T00:00:00+08:00"), 1.0);
    let instant = Limit::working_days(0);
    assert_eq!(
        hall.share_elapsed(accepted, instant, &[], t("2019-10-21T12:00:00+08:00")),
        Ok(0.0),
        "即办件 before the close of the day"
    );
    // A yellow warning at 80 %: the close of the 8th working day, 10-31.
    assert_eq!(
        hall.share_reached_at(accepted, ten, &[], 0.8),
        Ok(t("2019-11-01T00:00:00+08:00"))
    );
    assert_eq!(
        hall.share_reached_at(accepted, ten, &[], 1.0),
        hall.deadline(accepted, ten)
    );
    // Two paused working days move the warning by two working days as well.
    let p = [Pause {
        from: t("2019-10-23T15:00:00+08:00"),
        to: t("2019-10-25T11:00:00+08:00"),
    }];
    assert_eq!(
        hall.share_reached_at(accepted, ten, &p, 0.8),
        Ok(t("2019-11-05T00:00:00+08:00"))
    );
    assert_eq!(
        hall.share_elapsed(accepted, ten, &p, t("2019-10-29T00:00:00+08:00")),
        Ok(0.3),
        "10-22, 10-23 and 10-28 of 10"
    );
}

/// Every start day of 2019–2025 and every N in 0..=60: the deadline is the close of the N-th
/// working day after the start day, found by scanning the days one by one, and counting the
/// working days back from it gives N.
#[test]
fn every_start_day_and_every_n_lands_on_a_working_day_and_counts_back() {
    let cal = shipped();
    let hall = cal.in_zone(china());
    let mut day = d("2019-01-01");
    while day <= d("2025-12-31") {
        let accepted = hall.close_of(day) - TimeDelta::hours(7); // 17:00
        let mut nth = vec![day];
        let mut scan = day;
        while nth.len() <= 60 {
            scan = scan + Days::new(1);
            if cal.is_workday(scan).unwrap() {
                nth.push(scan);
            }
        }
        for (n, &last) in (0u32..).zip(&nth) {
            let due = hall.deadline(accepted, Limit::working_days(n)).unwrap();
            assert_eq!(due, hall.close_of(last), "{day} + {n}");
            assert_eq!(hall.working_days_elapsed(accepted, due), Ok(n));
        }
        day = day + Days::new(1);
    }
}

proptest! {
    #[test]
    fn adding_working_days_lands_on_a_working_day_and_counts_back(offset in 0u64..2700, n in 1u32..60) {
        // Start dates up to 2026-05 with at most 60 working days stay within the shipped years.
        let cal = shipped();
        let start = d("2019-01-01") + Days::new(offset);
        let end = cal.add_working_days(start, n).expect("within the shipped calendar");
        prop_assert_eq!(cal.is_workday(end), Ok(true));
        prop_assert_eq!(cal.working_days_between(start, end), Ok(n));
    }

    #[test]
    fn instant_deadlines_land_on_working_days_in_any_offset_and_count_back(
        secs in 0i64..2700 * 86_400,
        n in 1u32..60,
        hours in 1u32..200,
        offset_hours in -12i32..=14,
    ) {
        let cal = shipped();
        let hall = cal.in_zone(china());
        let accepted = (t("2019-01-01T00:00:00+08:00") + TimeDelta::seconds(secs))
            .with_timezone(&FixedOffset::east_opt(offset_hours * 3600).unwrap());
        let due = hall.deadline(accepted, Limit::working_days(n)).unwrap();
        prop_assert_eq!(due.offset(), &china());
        prop_assert_eq!(due, hall.close_of(hall.last_day(due)));
        prop_assert_eq!(cal.is_workday(hall.last_day(due)), Ok(true));
        prop_assert_eq!(hall.working_days_elapsed(accepted, due), Ok(n));
        prop_assert_eq!(hall.working_days_elapsed(accepted, due - TimeDelta::seconds(1)), Ok(n - 1));
        prop_assert_eq!(hall.last_day(due), cal.add_working_days(hall.date_of(accepted), n).unwrap());
        prop_assert_eq!(hall.share_reached_at(accepted, Limit::working_days(n), &[], 1.0), Ok(due));
        let due = hall.deadline(accepted, Limit::hours(hours)).unwrap();
        prop_assert!(due > accepted);
        prop_assert_eq!(cal.is_workday(hall.last_day(due)), Ok(true));
        let due = hall.deadline(accepted, Limit::calendar_days(n)).unwrap();
        prop_assert!(due >= hall.close_of(hall.date_of(accepted) + Days::new(u64::from(n))));
        prop_assert_eq!(cal.is_workday(hall.last_day(due)), Ok(true));
    }

    #[test]
    fn a_pause_moves_a_working_day_deadline_by_exactly_its_paused_working_days(
        secs in 0i64..2600 * 86_400,
        n in 1u32..40,
        pause_at in 0i64..60 * 86_400,
        pause_for in 0i64..20 * 86_400,
    ) {
        let cal = shipped();
        let hall = cal.in_zone(china());
        let accepted = t("2019-01-01T00:00:00+08:00") + TimeDelta::seconds(secs);
        let limit = Limit::working_days(n);
        let due = hall.deadline(accepted, limit).unwrap();
        let from = accepted + TimeDelta::seconds(pause_at);
        prop_assume!(from < due);
        let p = [Pause { from, to: from + TimeDelta::seconds(pause_for) }];
        let paused = hall.paused_working_days(&p).unwrap();
        prop_assert_eq!(
            hall.deadline_with_pauses(accepted, limit, &p),
            hall.deadline(accepted, Limit::working_days(n + paused))
        );
    }
}
