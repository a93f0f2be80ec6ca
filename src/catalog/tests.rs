//! The catalog as a whole: the shipped files, and problems located by file and line.

use super::*;

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/catalog")
}

#[test]
fn shipped_catalog_is_valid_and_complete() {
    let catalog = Catalog::load(&shipped()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(catalog.departments.len(), 7);
    assert_eq!(catalog.materials.len(), 21);
    assert_eq!(catalog.items.len(), 8);
    assert_eq!(catalog.bundles.len(), 2);
    let qysl = &catalog.items["QY-SL"];
    assert_eq!(
        catalog.implementation_code(qysl),
        "1164010001013301851000112001000"
    );
    let order = BundleOrder::of(&catalog.bundles["qiye-kaiban"]);
    for later in ["GZ-KZ", "SW-XB", "SB-DJ", "GJJ-DJ"] {
        assert!(order.precedes("QY-SL", later), "{later}");
    }
}

fn errors(text: &str) -> Vec<ConfigProblem> {
    let base = std::fs::read_to_string(shipped().join("departments.toml")).unwrap();
    let mats = std::fs::read_to_string(shipped().join("materials.toml")).unwrap();
    let sources = vec![
        (PathBuf::from("departments.toml"), base),
        (PathBuf::from("materials.toml"), mats),
        (PathBuf::from("test.toml"), text.to_string()),
    ];
    Catalog::from_sources(&sources).expect_err("must fail").0
}

const ITEM: &str = r#"
[[item]]
code = "T-1"
name = "测试事项"
department = "scjg"
implementation_suffix = "1000999000000"
applicant_kinds = ["person"]
promised_working_days = 1
legal_working_days = 2
modes = ["standard"]
"#;

#[test]
fn unknown_department_is_reported_with_file_and_line() {
    let errs = errors(&ITEM.replace("\"scjg\"", "\"nope\""));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].file, "test.toml");
    assert_eq!(errs[0].line, 5);
    assert!(
        errs[0].message.contains("unknown department \"nope\""),
        "{}",
        errs[0].message
    );
}

#[test]
fn duplicate_item_code_names_both_places() {
    let errs = errors(&format!("{ITEM}{ITEM}"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].line, 13);
    assert!(
        errs[0].message.contains("first defined at test.toml:3"),
        "{}",
        errs[0].message
    );
}

#[test]
fn bundle_naming_a_missing_item_and_a_cycle_are_both_reported() {
    let text = format!(
        "{ITEM}{}",
        r#"
[[bundle]]
code = "b"
name = "环"
items = ["T-1", "T-2"]
[[bundle.step]]
item = "T-1"
after = ["T-1"]
"#
    );
    let errs = errors(&text);
    let messages: Vec<_> = errors_text(&errs);
    assert!(
        messages.iter().any(|m| m.contains("missing item \"T-2\"")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("cycle: T-1 → T-1")),
        "{messages:?}"
    );
}

#[test]
fn a_longer_cycle_is_reported_with_its_path() {
    let second = ITEM
        .replace("T-1", "T-2")
        .replace("1000999000000", "1000999000001");
    let text = format!(
        "{ITEM}{second}{}",
        r#"
[[bundle]]
code = "b"
name = "环"
items = ["T-1", "T-2"]
[[bundle.step]]
item = "T-1"
after = ["T-2"]
[[bundle.step]]
item = "T-2"
after = ["T-1"]
"#
    );
    let errs = errors_text(&errors(&text));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(errs[0].contains("cycle: T-1 → T-2 → T-1"), "{errs:?}");
}

#[test]
fn unknown_key_is_reported_with_line() {
    let errs = errors(&format!("{ITEM}promised_days = 3\n"));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].message.contains("promised_days"),
        "{}",
        errs[0].message
    );
    assert_eq!(errs[0].line, 11, "{}", errs[0].message);
}

fn errors_text(errs: &[ConfigProblem]) -> Vec<String> {
    errs.iter().map(|e| e.to_string()).collect()
}

#[test]
fn a_fee_without_legal_basis_is_refused_and_conditions_are_kept() {
    let with_fee = format!(
        "{ITEM}conditions = [\"申请人具有完全民事行为能力\"]\n  [[item.fee]]\n  name = \"登记费\"\n  amount = \"每件80元\"\n  legal_basis = \" \"\n"
    );
    let errs = errors(&with_fee);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0]
            .message
            .contains("item T-1: a fee needs name, amount and legal_basis"),
        "{}",
        errs[0].message
    );
}
