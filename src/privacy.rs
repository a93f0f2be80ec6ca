//! Masking of personal data (ID numbers, credit codes of individuals, mobile numbers, names,
//! addresses) before it reaches a log line, a span, an error message or an audit record that
//! outlives the case, and [`scan`], which finds personal data left unmasked in a text (the
//! test suites' logs, an operator's own; `yichuang logs scan`). This module owns the masking
//! rules; it never decides what to log.
//!
//! What counts as masked is what the `mask_*` functions produce: a value with `*` in it is no
//! longer recognised, so whatever [`scan`] finds is a value no mask was applied to.

use chrono::NaiveDate;

use crate::ids::{check_credit_code, check_resident_id, is_mobile};

/// Masks an identity number or credit code: the first 4 and last 4 characters stay
/// (`6401**********001X`); shorter values keep only their last character.
pub fn mask_id(id: &str) -> String {
    let chars: Vec<char> = id.chars().collect();
    let n = chars.len();
    if n > 8 {
        let mut out: String = chars[..4].iter().collect();
        out.extend(std::iter::repeat_n('*', n - 8));
        out.extend(&chars[n - 4..]);
        out
    } else if n > 1 {
        let mut out: String = std::iter::repeat_n('*', n - 1).collect();
        out.push(chars[n - 1]);
        out
    } else {
        "*".repeat(n)
    }
}

/// Masks a mobile number: `139****7788`. Non-digits are kept so that a value being normalised
/// still shows its shape (`139 ****7788`).
pub fn mask_mobile(mobile: &str) -> String {
    let digits: Vec<usize> = mobile
        .char_indices()
        .filter(|(_, c)| c.is_ascii_digit())
        .map(|(i, _)| i)
        .collect();
    if digits.len() < 8 {
        return mask_id(mobile);
    }
    let hide = &digits[3..digits.len() - 4];
    mobile
        .char_indices()
        .map(|(i, c)| if hide.contains(&i) { '*' } else { c })
        .collect()
}

/// Masks a personal name: the first character stays (`马*`, `刘**`).
pub fn mask_name(name: &str) -> String {
    let mut chars = name.chars();
    match chars.next() {
        Some(first) => std::iter::once(first).chain(chars.map(|_| '*')).collect(),
        None => String::new(),
    }
}

/// Masks an address after its first six characters (the region), which stay.
pub fn mask_address(address: &str) -> String {
    let chars: Vec<char> = address.chars().collect();
    if chars.len() <= 6 {
        return "*".repeat(chars.len());
    }
    chars[..6].iter().collect::<String>() + "****"
}

/// Masks personal data in a task message's JSON form: inside `submission`, names, identity
/// numbers, phone numbers and addresses by their keys, and anything else that looks like an
/// identity or phone number.
pub fn mask_task_json(task: &mut serde_json::Value) {
    use serde_json::Value;
    fn walk(v: &mut Value, key: &str) {
        match v {
            Value::Object(m) => {
                for (k, v) in m.iter_mut() {
                    walk(v, k);
                }
            }
            Value::Array(items) => {
                for i in items {
                    walk(i, key);
                }
            }
            Value::String(s) => {
                let k = key.to_ascii_lowercase();
                let named = k.ends_with("name") && !k.ends_with("filename");
                *s = if named || k == "recipient" {
                    mask_name(s)
                } else if k.contains("idnumber") || k == "uscc" {
                    mask_id(s)
                } else if k.contains("mobile") || k.contains("phone") {
                    mask_mobile(s)
                } else if k.contains("address") {
                    mask_address(s)
                } else {
                    mask_free_text(s)
                };
            }
            _ => {}
        }
    }
    if let Some(s) = task.get_mut("submission") {
        walk(s, "submission");
    }
}

/// Masks what looks like a resident identity number (18 characters, 17 digits and a digit or
/// `X`; or 15 digits) or a mobile number (11 digits from `1`) in free text — a legacy system's
/// message, an error, a history entry's detail. Case numbers, licence numbers and credit codes
/// of organisations are left as they are. Names in free text cannot be recognised; free text
/// from outside is logged only through this.
pub fn mask_free_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        let b = run.as_bytes();
        let digits = |s: &[u8]| s.iter().all(u8::is_ascii_digit);
        let id18 = b.len() == 18
            && digits(&b[..17])
            && (b[17].is_ascii_digit() || b[17] == b'X' || b[17] == b'x');
        let id15 = b.len() == 15 && digits(b);
        let mobile = b.len() == 11 && digits(b) && b[0] == b'1';
        if id18 || id15 || mobile {
            out.push_str(&mask_id(run));
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Kinds of personal data, for values whose kind is known from where they sit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personal {
    /// Not personal data (codes, dates, organisation names).
    No,
    IdNumber,
    Mobile,
    Name,
    Address,
}

impl Personal {
    /// Masks `value` according to its kind.
    pub fn mask(self, value: &str) -> String {
        match self {
            Personal::No => value.to_string(),
            Personal::IdNumber => mask_id(value),
            Personal::Mobile => mask_mobile(value),
            Personal::Name => mask_name(value),
            Personal::Address => mask_address(value),
        }
    }
}

/// A kind of personal data that [`scan`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// An 18-character resident ID number (GB 11643) whose check character is right and whose
    /// birth date exists and has passed.
    ResidentId,
    /// A unified social credit code (GB 32100) of an individual business (个体工商户, category
    /// `92`: registered by market regulation, held by a natural person) whose check character
    /// is right. Codes of organisations (`91…` companies, `93…` cooperatives, `1…` public
    /// bodies) are not personal data.
    CreditCode,
    /// A mainland mobile number: 11 digits `1[3-9]…`, on its own, after `86` / `0086`, or
    /// grouped `139 0951 7788` / `139-0951-7788`.
    Mobile,
    /// One of the names given to [`scan`].
    Name,
}

impl Kind {
    /// The name `yichuang logs scan` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::ResidentId => "resident-id",
            Kind::CreditCode => "credit-code",
            Kind::Mobile => "mobile",
            Kind::Name => "name",
        }
    }

    fn mask(self, value: &str) -> String {
        match self {
            Kind::ResidentId | Kind::CreditCode => mask_id(value),
            Kind::Mobile => mask_mobile(value),
            Kind::Name => mask_name(value),
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Personal data found unmasked by [`scan`]. It holds the value only masked, so a finding can
/// be printed, logged or put in an assertion message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Line, from 1.
    pub line: usize,
    /// Column of the value's first character, from 1, counted in characters (not bytes).
    pub column: usize,
    pub kind: Kind,
    /// The value, masked as its kind is everywhere else (`6401**********001X`).
    pub masked: String,
    /// Up to 32 characters either side of the value, with every value found on the line
    /// masked and anything else shaped like an ID or mobile number masked too
    /// ([`mask_free_text`]): safe to print.
    pub excerpt: String,
}

/// Finds personal data left unmasked in `text`: resident ID numbers and credit codes of
/// individuals with a valid check character, mainland mobile numbers, and the `names` given
/// (names cannot be told from other words; only listed ones are found). Numbers count only as
/// a whole run of letters and digits (full-width ones too), so trace ids, UUIDs, hashes, case
/// numbers and timestamps are not mistaken for them; a run after `<digit>.` or before
/// `.<digit>` is the fraction or integer part of a decimal number and is skipped too. A masked
/// value (`6401**********001X`, `139****7788`, `马*`) is never found: its `*` breaks the run,
/// and a masked name is no longer the name.
pub fn scan(text: &str, names: &[String]) -> Vec<Finding> {
    let today = chrono::Utc::now().date_naive();
    text.lines()
        .enumerate()
        .flat_map(|(i, line)| scan_line(line, i + 1, names, today))
        .collect()
}

/// Reads a list of personal names for [`scan`]: one name per line; `#` starts a comment;
/// blank lines are skipped. A name of one character would be found in every other word and is
/// refused.
pub fn parse_names(text: &str) -> Result<Vec<String>, NamesError> {
    let mut names = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let name = line.split('#').next().unwrap_or("").trim();
        match name.chars().count() {
            0 => {}
            1 => {
                return Err(NamesError {
                    line: i + 1,
                    problem: "a name of one character is found in every other word; list full names",
                });
            }
            _ => names.push(name.to_string()),
        }
    }
    Ok(names)
}

/// A list of names [`parse_names`] refuses, with the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {problem}")]
pub struct NamesError {
    pub line: usize,
    pub problem: &'static str,
}

/// Characters either side of a finding in its excerpt.
const EXCERPT_CONTEXT: usize = 32;

fn scan_line(line: &str, number: usize, names: &[String], today: NaiveDate) -> Vec<Finding> {
    let chars: Vec<char> = line.chars().collect();
    let mut spans = number_spans(&chars, today);
    for name in names.iter().filter(|n| !n.is_empty()) {
        name_spans(line, name, &mut spans);
    }
    if spans.is_empty() {
        return Vec::new();
    }
    // Longest first where two start together; a span inside an earlier one is the same find.
    spans.sort_by_key(|&(start, end, _)| (start, std::cmp::Reverse(end)));
    let mut kept: Vec<(usize, usize, Kind)> = Vec::new();
    for span in spans {
        if kept.last().is_none_or(|last| span.0 >= last.1) {
            kept.push(span);
        }
    }
    // Every mask keeps the number of characters, so columns stay where they were.
    let mut masked = chars.clone();
    let mut values = Vec::with_capacity(kept.len());
    for &(start, end, kind) in &kept {
        let value: String = chars[start..end].iter().collect();
        let m: Vec<char> = kind.mask(&value).chars().collect();
        debug_assert_eq!(m.len(), end - start, "a mask keeps the length");
        masked.splice(start..end, m.iter().copied());
        values.push(m.into_iter().collect::<String>());
    }
    let safe: Vec<char> = mask_free_text(&masked.iter().collect::<String>())
        .chars()
        .collect();
    kept.into_iter()
        .zip(values)
        .map(|((start, end, kind), masked)| {
            let from = start.saturating_sub(EXCERPT_CONTEXT);
            let to = (end + EXCERPT_CONTEXT).min(safe.len());
            let mut excerpt = String::new();
            if from > 0 {
                excerpt.push('…');
            }
            excerpt.extend(&safe[from..to]);
            if to < safe.len() {
                excerpt.push('…');
            }
            Finding {
                line: number,
                column: start + 1,
                kind,
                masked,
                excerpt,
            }
        })
        .collect()
}

/// The ASCII form of a full-width digit or letter (`６` → `6`); other characters as they are.
fn half_width(c: char) -> char {
    match c {
        '\u{FF10}'..='\u{FF19}' | '\u{FF21}'..='\u{FF3A}' | '\u{FF41}'..='\u{FF5A}' => {
            char::from_u32(c as u32 - 0xFEE0).unwrap_or(c)
        }
        _ => c,
    }
}

/// Spans (start, end in characters) of ID numbers, credit codes and mobile numbers.
fn number_spans(chars: &[char], today: NaiveDate) -> Vec<(usize, usize, Kind)> {
    // Maximal runs of letters and digits, in their half-width form.
    let mut runs: Vec<(usize, usize, String)> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !half_width(chars[i]).is_ascii_alphanumeric() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && half_width(chars[i]).is_ascii_alphanumeric() {
            i += 1;
        }
        runs.push((
            start,
            i,
            chars[start..i].iter().map(|&c| half_width(c)).collect(),
        ));
    }
    let digit_at = |i: usize| {
        chars
            .get(i)
            .is_some_and(|&c| half_width(c).is_ascii_digit())
    };
    let in_decimal = |start: usize, end: usize| {
        (start >= 2 && chars[start - 1] == '.' && digit_at(start - 2))
            || (chars.get(end) == Some(&'.') && digit_at(end + 1))
    };
    let mut spans = Vec::new();
    for (k, (start, end, run)) in runs.iter().enumerate() {
        if in_decimal(*start, *end) {
            continue;
        }
        if let Some(kind) = classify(run, today) {
            spans.push((*start, *end, kind));
            continue;
        }
        // 139 0951 7788, 139-0951-7788: three runs joined by one space or hyphen each.
        let grouped = runs.get(k..k + 3).filter(|g| {
            let joined = |a: &(usize, usize, String), b: &(usize, usize, String)| {
                b.0 == a.1 + 1 && matches!(chars[a.1], ' ' | '-')
            };
            [3, 4, 4].iter().zip(g.iter()).all(|(n, r)| r.2.len() == *n)
                && joined(&g[0], &g[1])
                && joined(&g[1], &g[2])
                && !in_decimal(g[2].0, g[2].1)
                && is_mobile(&format!("{}{}{}", g[0].2, g[1].2, g[2].2))
        });
        if let Some(g) = grouped {
            spans.push((*start, g[2].1, Kind::Mobile));
        }
    }
    spans
}

/// The kind of a whole run of letters and digits, if it is personal data.
fn classify(run: &str, today: NaiveDate) -> Option<Kind> {
    match run.len() {
        18 => {
            let upper = run.to_ascii_uppercase();
            let born = NaiveDate::parse_from_str(upper.get(6..14)?, "%Y%m%d");
            if check_resident_id(&upper).is_ok() && born.is_ok_and(|d| d <= today) {
                return Some(Kind::ResidentId);
            }
            // Credit codes are written in capitals; lower-case hex of this length is not one.
            (run.starts_with("92") && check_credit_code(run).is_ok()).then_some(Kind::CreditCode)
        }
        11 => is_mobile(run).then_some(Kind::Mobile),
        13 => (run.starts_with("86") && is_mobile(&run[2..])).then_some(Kind::Mobile),
        15 => (run.starts_with("0086") && is_mobile(&run[4..])).then_some(Kind::Mobile),
        _ => None,
    }
}

/// Spans of `name` in `line`. A name that begins or ends with a Latin letter or digit is found
/// only where no letter or digit continues it (`Li Na`, not inside `Li Nanjing`).
fn name_spans(line: &str, name: &str, spans: &mut Vec<(usize, usize, Kind)>) {
    let len = name.chars().count();
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    let open_start = alnum(name.chars().next());
    let open_end = alnum(name.chars().last());
    for (at, _) in line.match_indices(name) {
        let before = line[..at].chars().next_back();
        let after = line[at + name.len()..].chars().next();
        if (open_start && alnum(before)) || (open_end && alnum(after)) {
            continue;
        }
        let start = line[..at].chars().count();
        spans.push((start, start + len, Kind::Name));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_text_keeps_words_and_masks_numbers() {
        assert_eq!(
            mask_free_text("身份证号64010419800315001X有误, 电话13909510000, 编号 A-12"),
            "身份证号6401**********001X有误, 电话1390***0000, 编号 A-12"
        );
        // Case numbers, department case numbers and organisations' credit codes stay readable.
        let kept =
            "1164010001013301851000112001000201910210001-02 GA20191125000001 91640104MA76L8Q23H";
        assert_eq!(mask_free_text(kept), kept);
    }

    fn names() -> Vec<String> {
        vec!["马强".into(), "刘建国".into()]
    }

    fn kinds(text: &str) -> Vec<(usize, Kind, String)> {
        scan(text, &names())
            .into_iter()
            .map(|f| (f.column, f.kind, f.masked))
            .collect()
    }

    #[test]
    fn scan_finds_each_kind_planted_unmasked() {
        let line = r#"{"level":"INFO","collector":"马强","id":"64010419800315001X","mobile":"13909517788","holder":"92640104MA0K1P2Q3P"}"#;
        assert_eq!(
            kinds(line),
            [
                (30, Kind::Name, "马*".to_string()),
                (40, Kind::ResidentId, "6401**********001X".to_string()),
                (70, Kind::Mobile, "139****7788".to_string()),
                (93, Kind::CreditCode, "9264**********2Q3P".to_string()),
            ]
        );
    }

    #[test]
    fn scan_finds_nothing_once_masked() {
        let line = format!(
            r#"{{"collector":"{}","id":"{}","mobile":"{}","spaced":"{}","holder":"{}","text":"{}"}}"#,
            mask_name("马强"),
            mask_id("64010419800315001X"),
            mask_mobile("13909517788"),
            mask_mobile("139 0951 7788"),
            mask_id("92640104MA0K1P2Q3P"),
            mask_free_text("身份证号11010519491231002X有误, 电话13909510000"),
        );
        assert_eq!(kinds(&line), []);
    }

    #[test]
    fn scan_reports_line_and_column_in_characters() {
        let text = "first line\n法定代表人刘建国 电话 +86 139 0951 7788\r\nid ６４０１０４１９８００３１５００１Ｘ.";
        assert_eq!(
            kinds(text),
            [
                (6, Kind::Name, "刘**".to_string()),
                (17, Kind::Mobile, "139 **** 7788".to_string()),
                (
                    4,
                    Kind::ResidentId,
                    mask_id("６４０１０４１９８００３１５００１Ｘ")
                ),
            ]
        );
        let lines: Vec<usize> = scan(text, &names()).iter().map(|f| f.line).collect();
        assert_eq!(lines, [2, 2, 3]);
    }

    #[test]
    fn scan_finds_mobiles_with_country_code_and_in_prose() {
        for text in [
            "tel +8613909517788",
            "tel 008613909517788",
            "电话13909517788有误",
            "tel:139-0951-7788",
            "mobile=13909517788",
        ] {
            assert_eq!(
                scan(text, &[]).iter().map(|f| f.kind).collect::<Vec<_>>(),
                [Kind::Mobile],
                "{text}"
            );
        }
    }

    #[test]
    fn scan_excerpt_is_masked_and_cut() {
        let text = format!(
            "{} seller 640104198003150011 buyer 64010419800315001X of 马强 {}",
            "x".repeat(50),
            "y".repeat(50)
        );
        let found = scan(&text, &names());
        assert_eq!(found.len(), 2);
        let excerpt = &found[0].excerpt;
        // The seller's number fails its check digit: not a finding, but masked in the excerpt.
        assert!(excerpt.contains("6401**********0011"), "{excerpt}");
        assert!(excerpt.contains("6401**********001X"), "{excerpt}");
        assert!(excerpt.contains("马*"), "{excerpt}");
        assert!(
            excerpt.starts_with('…') && excerpt.ends_with('…'),
            "{excerpt}"
        );
        assert!(!excerpt.contains("马强") && !excerpt.contains("19800315"));
    }

    #[test]
    fn scan_keeps_quiet_on_identifiers_that_are_not_personal() {
        for text in [
            // Trace ids and span ids, one with a mobile-shaped run of digits inside.
            "traceparent=00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "trace_id=ab13909517788cdef0123456789abcde",
            "550e8400-e29b-41d4-a716-446655440000",
            // A case number, a task id, a department's case number, an organisation's code.
            "case=1164010001013301851000112001000201910210001 task=1164010001013301851000112001000201910210001-02",
            "GA20191125000001 91640104MA76L8Q23H 93640104MA76L8Q2N6 116401000101330185",
            // Timestamps in ms, seconds and nanoseconds, durations, decimals.
            "at_ms=1571625000000 at=1571625000 ns=1571625000000000000 took 0.13909517788s",
            "13909517788.5 ratio=2.13909517788",
            // An ID-shaped number inside a longer run, with a wrong check digit, unborn.
            "x64010419800315001X 640104198003150011 64010420990101001X",
            // Hex of an ID's length, digests.
            "sha256=60372fadb89ea9bc25d688d2bf2eb355d9fef83b4dc5114d766858bc00f76a40 id=92640104ma0k1p2q3p",
            // Masked forms.
            "马* 刘** 139****7788 1390***0000 6401**********001X",
        ] {
            assert_eq!(kinds(text), [], "{text}");
        }
    }

    #[test]
    fn scan_finds_latin_names_only_as_whole_words() {
        let names = vec!["Li Na".to_string()];
        assert_eq!(scan("by Li Na.", &names).len(), 1);
        assert_eq!(scan("to Li Nanjing", &names).len(), 0);
    }

    #[test]
    fn names_list_skips_comments_and_refuses_single_characters() {
        assert_eq!(
            parse_names("# who\n马强\n\n 刘建国  # the seller\n").unwrap(),
            ["马强", "刘建国"]
        );
        assert_eq!(parse_names("马强\n马\n").unwrap_err().line, 2);
    }

    proptest::proptest! {
        #[test]
        fn generated_ids_and_mobiles_are_found_and_their_masks_are_not(
            region in "[1-6][0-9]{5}", year in 1930i32..2020, month in 1u32..=12, day in 1u32..=28,
            seq in "[0-9]{3}", mobile in "1[3-9][0-9]{9}", sep in "[ ,;:=\"'()\u{4e00}-\u{4e20}]",
        ) {
            let first17 = format!("{region}{year:04}{month:02}{day:02}{seq}");
            let id = format!("{first17}{}", crate::ids::resident_id_check_char(&first17).unwrap());
            let text = format!("a{sep}{id}{sep}b{sep}{mobile}{sep}");
            let found: Vec<Kind> = scan(&text, &[]).iter().map(|f| f.kind).collect();
            proptest::prop_assert_eq!(found, [Kind::ResidentId, Kind::Mobile]);
            let masked = format!("a{sep}{}{sep}b{sep}{}{sep}", mask_id(&id), mask_mobile(&mobile));
            proptest::prop_assert!(scan(&masked, &[]).is_empty());
            let free = mask_free_text(&text);
            proptest::prop_assert!(scan(&free, &[]).is_empty());
        }
    }

    #[test]
    fn personal_data_is_masked_by_its_key() {
        let mut v = serde_json::json!({
            "caseNumber": "11640100010133018540000000000000000000001",
            "submission": {
                "applicant": {"name": "马强", "idNumber": "64010419800315001X",
                    "contact": {"mobile": "13909510000", "address": "宁夏回族自治区银川市兴庆区解放西街100号"}},
                "fields": {"note": "电话13909510000"}
            }
        });
        mask_task_json(&mut v);
        let text = v.to_string();
        for secret in ["马强", "64010419800315001X", "13909510000", "解放西街"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
        assert_eq!(v["caseNumber"], "11640100010133018540000000000000000000001");
        assert_eq!(v["submission"]["applicant"]["name"], "马*");
    }

    #[test]
    fn masks_as_documented() {
        assert_eq!(mask_id("64010419800315001X"), "6401**********001X");
        assert_eq!(mask_mobile("13909517788"), "139****7788");
        assert_eq!(mask_mobile("139 0951 7788"), "139 **** 7788");
        assert_eq!(mask_name("马强"), "马*");
        assert_eq!(mask_name("刘建国"), "刘**");
        assert_eq!(mask_address("宁夏回族自治区银川市"), "宁夏回族自治****");
    }
}
