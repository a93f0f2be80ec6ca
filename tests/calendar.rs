//! `yichuang calendar` as an operator meets it: limits in working days, calendar days and hours,
//! pauses, and a calendar directory that takes a new year's file without a rebuild.

use std::process::Output;

fn calendar(args: &[&str]) -> Output {
    testkit::yichuang!(&[&["calendar"], args].concat())
}

fn stdout(out: &Output) -> String {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn add_counts_working_days_calendar_days_and_hours() {
    assert_eq!(stdout(&calendar(&["add", "2019-09-30", "3"])), "2019-10-10");
    assert_eq!(
        stdout(&calendar(&["add", "2019-09-30", "3wd"])),
        "2019-10-10"
    );
    assert_eq!(
        stdout(&calendar(&["add", "2019-10-21", "10个工作日"])),
        "2019-11-04"
    );
    // 3 calendar days end on 2020-01-26, inside the extended Spring Festival: moved to 02-03.
    assert_eq!(
        stdout(&calendar(&["add", "2020-01-23", "3d"])),
        "2020-02-03"
    );
    // 24 hours across National Day 2019, from a local time or from an absolute instant.
    assert_eq!(
        stdout(&calendar(&["add", "2019-09-30T10:00", "24h"])),
        "2019-10-08T10:00:00+08:00"
    );
    assert_eq!(
        stdout(&calendar(&["add", "2019-09-30T02:00:00Z", "24h"])),
        "2019-10-08T10:00:00+08:00"
    );
}

#[test]
fn add_moves_the_deadline_by_the_paused_working_days() {
    assert_eq!(
        stdout(&calendar(&[
            "add",
            "2019-10-21",
            "10wd",
            "--pause",
            "2019-10-23T15:00/2019-10-25T11:00",
        ])),
        "2019-11-06"
    );
    assert_eq!(
        stdout(&calendar(&[
            "add",
            "2019-10-21",
            "10",
            "--pause",
            "2019-10-23/2019-10-25",
            "--pause",
            "2019-10-24/2019-10-28",
        ])),
        "2019-11-07",
        "overlapping pauses: 10-24, 10-25 and 10-28 paused once"
    );
}

#[test]
fn between_counts_the_working_days_add_added() {
    assert_eq!(
        stdout(&calendar(&["between", "2019-09-30", "2019-10-10"])),
        "3"
    );
    assert_eq!(
        stdout(&calendar(&["between", "2019-09-27", "2019-09-29"])),
        "1",
        "the make-up Sunday"
    );
}

#[test]
fn usage_errors_exit_2() {
    let out = calendar(&["add", "2019-09-30", "24h"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("an hour limit needs a start time, like 2019-09-30T09:00"),
        "{}",
        stderr(&out)
    );
    let out = calendar(&["add", "2019-09-30", "3x"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("is not a time limit"),
        "{}",
        stderr(&out)
    );
    let out = calendar(&["add", "2019-09-30", "3", "--pause", "2019-10-01"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not a pause (FROM/TO)"));
}

#[test]
fn a_new_years_file_is_used_without_a_rebuild() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = testkit::repo().join("config/calendar");
    for year in 2019..=2026 {
        let name = format!("{year}.toml");
        std::fs::copy(shipped.join(&name), dir.path().join(&name)).unwrap();
    }
    let dir_arg = dir.path().to_str().unwrap();
    let out = calendar(&["add", "2026-12-20", "30", "--dir", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no working-day calendar for 2027: add config/calendar/2027.toml"),
        "{}",
        stderr(&out)
    );
    // A test fixture, not the 2027 notice: New Year's Day off, joined to the weekend.
    std::fs::write(
        dir.path().join("2027.toml"),
        "year = 2027\nnotice = \"fixture\"\nsource = \"https://example.invalid/2027\"\namendments = []\ndays = [\n  { date = 2027-01-01, off = true, name = \"元旦\" },\n]\n",
    )
    .unwrap();
    // 2026-12-21..25 (5), 12-28..31 (9), 2027-01-01 off, 01-04 on (10..): the 30th is 2027-02-01.
    assert_eq!(
        stdout(&calendar(&["add", "2026-12-20", "30", "--dir", dir_arg])),
        "2027-02-01"
    );
}

#[test]
fn a_broken_calendar_file_is_reported_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("2030.toml"),
        "year = 2030\nnotice = \"n\"\nsource = \"s\"\ndays = [\n  { date = 2030-01-02, off = false, name = \"x\" },\n  { date = 2031-01-01, off = true, name = \"x\" },\n]\n",
    )
    .unwrap();
    let out = calendar(&[
        "is-workday",
        "2030-01-02",
        "--dir",
        dir.path().to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("2030.toml:5: 2030-01-02 is a make-up working day but falls on a weekday"),
        "{err}"
    );
    assert!(
        err.contains("2030.toml:6: 2031-01-01 is outside year 2030"),
        "{err}"
    );
}

#[test]
fn check_validates_one_year_file_beside_the_others_without_starting_anything() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = testkit::repo().join("config/calendar");
    let dir_arg = dir.path().to_str().unwrap();
    let good = dir.path().join("2027.toml");
    std::fs::write(
        &good,
        "year = 2027\nnotice = \"fixture\"\nsource = \"https://example.invalid/2027\"\ndays = [\n  { date = 2027-01-01, off = true, name = \"元旦\" },\n]\n",
    )
    .unwrap();
    std::fs::copy(shipped.join("2026.toml"), dir.path().join("2026.toml")).unwrap();
    let out = calendar(&["check", good.to_str().unwrap(), "--dir", dir_arg]);
    assert!(stdout(&out).contains("2027.toml: OK"), "{}", stdout(&out));

    // A day the 2026 notice arranges the other way, and a bad date: each with its line.
    let bad = dir.path().join("bad").join("2027.toml");
    std::fs::create_dir(bad.parent().unwrap()).unwrap();
    std::fs::write(
        &bad,
        "year = 2027\nnotice = \"fixture\"\nsource = \"s\"\ndays = [\n  { date = 2026-12-27, off = false, name = \"x\" },\n  { date = 2027-03-03, off = false, name = \"x\" },\n]\n",
    )
    .unwrap();
    let with_dec_27 = {
        let text = std::fs::read_to_string(shipped.join("2026.toml")).unwrap();
        let end = text.rfind(']').unwrap();
        format!(
            "{}  {{ date = 2026-12-27, off = true, name = \"x\" }},\n{}",
            &text[..end],
            &text[end..]
        )
    };
    std::fs::write(dir.path().join("2026.toml"), with_dec_27).unwrap();
    let out = calendar(&["check", bad.to_str().unwrap(), "--dir", dir_arg]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(
            "2027.toml:5: 2026-12-27 is a make-up working day here but a day off in 2026.toml"
        ),
        "{err}"
    );
    assert!(
        err.contains("2027.toml:6: 2027-03-03 is a make-up working day but falls on a weekday"),
        "{err}"
    );
    assert!(err.contains("would be refused"), "{err}");
}

#[test]
fn import_turns_a_holiday_cn_file_into_a_year_file_the_gateway_loads() {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("2026.toml");
    let out = calendar(&[
        "import",
        "tests/fixtures/holiday-cn-2026.json",
        "--notice",
        "国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let made = std::fs::read_to_string(&out_file).unwrap();
    assert!(
        made.contains("{ date = 2026-02-28, off = false, name = \"春节\" }"),
        "{made}"
    );
    // What it made answers like the shipped file.
    let dir_arg = dir.path().to_str().unwrap();
    for (date, answer) in [
        ("2026-02-28", "is a working day"),
        ("2026-10-07", "is not a working day"),
    ] {
        let out = calendar(&["is-workday", date, "--dir", dir_arg]);
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(answer),
            "{date}: {}",
            stderr(&out)
        );
    }
    // Not a holiday-cn file: refused, saying which file.
    let out = calendar(&["import", "Cargo.toml"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Cargo.toml:1: not a holiday-cn year file"),
        "{}",
        stderr(&out)
    );
}
