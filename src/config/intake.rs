//! Intake's settings: the hall's UTC offset and how far a window's clock may run fast, and the
//! bounds on one submission and one supplement (items, materials, fields, parties, string and
//! file sizes, media types). Shapes, defaults and the offset's parsing only: it never judges a
//! submission (`crate::intake` does).

use serde::Deserialize;

/// Settings of intake (normalisation and validation).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeConfig {
    /// The hall's UTC offset (`+08:00` in China): case-number dates and deadlines are counted in it.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// How far in the future `submittedAt` may be, in seconds, to allow for window clocks that run fast.
    #[serde(default = "default_clock_skew")]
    pub max_clock_skew_secs: i64,
    /// Largest number of items in one submission.
    #[serde(default = "default_max_items")]
    pub max_items: usize,
    /// Largest number of materials in one submission.
    #[serde(default = "default_max_materials")]
    pub max_materials: usize,
    /// Largest number of form fields in one submission.
    #[serde(default = "default_max_fields")]
    pub max_fields: usize,
    /// Largest number of other parties in one submission.
    #[serde(default = "default_max_parties")]
    pub max_parties: usize,
    /// Longest string value accepted anywhere in a submission, in characters.
    #[serde(default = "default_max_string_chars")]
    pub max_string_chars: usize,
    /// Largest electronic material accepted, in bytes.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: i64,
    /// Media types accepted for electronic materials.
    #[serde(default = "default_media_types")]
    pub media_types: Vec<String>,
    /// Largest number of materials handed in by one supplement (补正).
    #[serde(default = "default_max_supplement_materials")]
    pub max_supplement_materials: usize,
    /// Largest number of tasks one supplement names.
    #[serde(default = "default_max_supplement_tasks")]
    pub max_supplement_tasks: usize,
}

fn default_utc_offset() -> String {
    "+08:00".into()
}
fn default_clock_skew() -> i64 {
    300
}
fn default_max_items() -> usize {
    20
}
fn default_max_materials() -> usize {
    200
}
fn default_max_fields() -> usize {
    100
}
fn default_max_parties() -> usize {
    20
}
fn default_max_supplement_materials() -> usize {
    100
}
fn default_max_supplement_tasks() -> usize {
    50
}
fn default_max_string_chars() -> usize {
    2000
}
fn default_max_file_bytes() -> i64 {
    100 * 1024 * 1024
}
fn default_media_types() -> Vec<String> {
    [
        "application/pdf",
        "image/jpeg",
        "image/png",
        "application/ofd",
    ]
    .map(String::from)
    .to_vec()
}

impl Default for IntakeConfig {
    fn default() -> Self {
        Self {
            utc_offset: default_utc_offset(),
            max_clock_skew_secs: default_clock_skew(),
            max_items: default_max_items(),
            max_materials: default_max_materials(),
            max_fields: default_max_fields(),
            max_parties: default_max_parties(),
            max_string_chars: default_max_string_chars(),
            max_file_bytes: default_max_file_bytes(),
            media_types: default_media_types(),
            max_supplement_materials: default_max_supplement_materials(),
            max_supplement_tasks: default_max_supplement_tasks(),
        }
    }
}

impl IntakeConfig {
    /// The hall's UTC offset, parsed.
    pub fn offset(&self) -> Result<chrono::FixedOffset, String> {
        parse_offset(&self.utc_offset)
    }
}

fn parse_offset(text: &str) -> Result<chrono::FixedOffset, String> {
    let bad = || format!("utc_offset {text:?} is not of the form +08:00");
    let (sign, rest) = match text.as_bytes().first() {
        Some(b'+') => (1, &text[1..]),
        Some(b'-') => (-1, &text[1..]),
        _ => return Err(bad()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad)?;
    let secs =
        h.parse::<i32>().map_err(|_| bad())? * 3600 + m.parse::<i32>().map_err(|_| bad())? * 60;
    chrono::FixedOffset::east_opt(sign * secs).ok_or_else(bad)
}
