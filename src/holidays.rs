//! Year files of the working-day calendar made from another shape: the JSON the open
//! `holiday-cn` data publishes for each year (`{"year", "papers": [URL…], "days": [{"name",
//! "date", "isOffDay"}]}`), turned into the project's TOML (`config/calendar/YYYY.toml`, see
//! [`crate::calendar`]) with the notice cited. What it writes is checked by the same loader the
//! gateway uses before it is handed out.

use std::fmt::Write;
use std::path::Path;

use chrono::NaiveDate;
use serde::Deserialize;

use crate::calendar::Calendar;

#[derive(Deserialize)]
struct HolidayCn {
    year: i32,
    #[serde(default)]
    papers: Vec<String>,
    days: Vec<HolidayCnDay>,
}

#[derive(Deserialize)]
struct HolidayCnDay {
    name: String,
    date: String,
    #[serde(rename = "isOffDay")]
    is_off_day: bool,
}

/// The title every year's notice has had since 2008, used when none is given.
pub fn default_notice(year: i32) -> String {
    format!("国务院办公厅关于{year}年部分节假日安排的通知")
}

/// Turns a holiday-cn year file (`json`, read from `from`) into the project's TOML. `notice`:
/// the notice's title with its document number; the usual title when `None`. Refused, saying
/// where: JSON that is not of that shape, a date that is not `YYYY-MM-DD`, no paper to cite, or
/// a result the calendar loader refuses (each problem with its line in the TOML).
pub fn from_holiday_cn(json: &str, from: &Path, notice: Option<&str>) -> Result<String, String> {
    let file: HolidayCn = serde_json::from_str(json).map_err(|e| {
        format!(
            "{}:{}: not a holiday-cn year file ({{\"year\", \"papers\", \"days\": [{{\"name\", \"date\", \"isOffDay\"}}]}}): {e}",
            from.display(),
            e.line()
        )
    })?;
    let year = file.year;
    let Some(source) = file.papers.first() else {
        return Err(format!(
            "{}: \"papers\" is empty: the notice's address is needed to cite it",
            from.display()
        ));
    };
    let mut days = Vec::with_capacity(file.days.len());
    for (i, day) in file.days.iter().enumerate() {
        let date = NaiveDate::parse_from_str(&day.date, "%Y-%m-%d").map_err(|_| {
            format!(
                "{}: days[{i}].date {:?} is not a date (YYYY-MM-DD)",
                from.display(),
                day.date
            )
        })?;
        days.push((date, day.is_off_day, day.name.as_str()));
    }
    // holiday-cn lists days by festival; the project's files are in date order.
    days.sort_by_key(|d| d.0);
    let notice = notice.map_or_else(|| default_notice(year), str::to_string);

    let mut out = String::new();
    let _ = writeln!(out, "# {notice}");
    let _ = writeln!(
        out,
        "# Imported by `yichuang calendar import` from {} (holiday-cn); check every day against the notice before use.",
        from.file_name().map_or_else(
            || from.display().to_string(),
            |n| n.to_string_lossy().into_owned()
        )
    );
    let _ = writeln!(out, "year = {year}");
    let _ = writeln!(out, "notice = {}", quoted(&notice));
    let _ = writeln!(out, "source = {}", quoted(source));
    let _ = writeln!(
        out,
        "# further notices that changed this year's arrangement, if any"
    );
    if file.papers.len() > 1 {
        let _ = writeln!(out, "amendments = [");
        for paper in &file.papers[1..] {
            let _ = writeln!(
                out,
                "  {{ notice = {}, source = {} }},",
                quoted(&format!("{year}年部分节假日安排的补充通知")),
                quoted(paper)
            );
        }
        let _ = writeln!(out, "]");
    } else {
        let _ = writeln!(out, "amendments = []");
    }
    out.push('\n');
    let _ = writeln!(
        out,
        "# Each entry: date (YYYY-MM-DD, TOML local date, unquoted), off = true for a day off, false for a make-up working day (调休上班), name = the festival it belongs to."
    );
    let _ = writeln!(
        out,
        "# Days not listed follow Monday–Friday working, Saturday–Sunday off."
    );
    let _ = writeln!(out, "days = [");
    for (date, off, name) in &days {
        let _ = writeln!(
            out,
            "  {{ date = {date}, off = {off}, name = {} }},",
            quoted(name)
        );
    }
    let _ = writeln!(out, "]");

    // Checked as the gateway would load it, under the name it must have.
    let name = format!("{year}.toml");
    if let Err(problems) = Calendar::default().add_year(Path::new(&name), &out) {
        return Err(problems
            .iter()
            .map(|p| format!("{p} (in the TOML made from {})", from.display()))
            .collect::<Vec<_>>()
            .join("\n"));
    }
    Ok(out)
}

/// A TOML basic string. JSON's string escapes (`\"`, `\\`, `\n`, `\uXXXX`…) are all TOML's too.
fn quoted(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
    }

    /// Every listed day of a year file: (date, off, name).
    fn listed(text: &str) -> Vec<(String, bool, String)> {
        let value: toml::Table = toml::from_str(text).unwrap();
        value["days"]
            .as_array()
            .unwrap()
            .iter()
            .map(|d| {
                (
                    d["date"].as_datetime().unwrap().to_string(),
                    d["off"].as_bool().unwrap(),
                    d["name"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    #[test]
    fn holiday_cn_2026_becomes_the_shipped_2026_file_day_for_day() {
        let from = root().join("tests/fixtures/holiday-cn-2026.json");
        let json = std::fs::read_to_string(&from).unwrap();
        let shipped = std::fs::read_to_string(root().join("config/calendar/2026.toml")).unwrap();
        let notice = "国务院办公厅关于2026年部分节假日安排的通知（国办发明电〔2025〕7号）";
        let made = from_holiday_cn(&json, &from, Some(notice)).unwrap();
        assert_eq!(listed(&made), listed(&shipped));
        let (a, b): (toml::Table, toml::Table) = (
            toml::from_str(&made).unwrap(),
            toml::from_str(&shipped).unwrap(),
        );
        for key in ["year", "notice", "source"] {
            assert_eq!(a[key], b[key], "{key}");
        }
        // And the calendar it gives answers like the shipped one on every day of the year.
        let mut ours = Calendar::default();
        ours.add_year(Path::new("2026.toml"), &made).unwrap();
        let mut theirs = Calendar::default();
        theirs.add_year(Path::new("2026.toml"), &shipped).unwrap();
        let mut day = NaiveDate::from_ymd_opt(2026, 1, 1).unwrap();
        while day < NaiveDate::from_ymd_opt(2026, 12, 25).unwrap() {
            assert_eq!(ours.is_workday(day), theirs.is_workday(day), "{day}");
            day = day.succ_opt().unwrap();
        }
    }

    #[test]
    fn a_file_of_another_shape_or_with_a_bad_day_is_refused_saying_where() {
        let from = Path::new("x.json");
        let e = from_holiday_cn("{\"year\": 2027}", from, None).unwrap_err();
        assert!(e.starts_with("x.json:1: not a holiday-cn year file"), "{e}");
        let e =
            from_holiday_cn(r#"{"year": 2027, "papers": [], "days": []}"#, from, None).unwrap_err();
        assert!(e.contains("\"papers\" is empty"), "{e}");
        let e = from_holiday_cn(
            r#"{"year": 2027, "papers": ["u"], "days": [{"name": "元旦", "date": "2027-1-1x", "isOffDay": true}]}"#,
            from,
            None,
        )
        .unwrap_err();
        assert!(e.contains("days[0].date \"2027-1-1x\""), "{e}");
        // A make-up working day on a weekday: the loader's own rule, with the TOML's line.
        let e = from_holiday_cn(
            r#"{"year": 2027, "papers": ["u"], "days": [{"name": "元旦", "date": "2027-01-04", "isOffDay": false}]}"#,
            from,
            None,
        )
        .unwrap_err();
        assert!(
            e.contains("2027.toml:12") && e.contains("falls on a weekday"),
            "{e}"
        );
    }
}
