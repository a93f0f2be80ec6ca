//! Check-digit algorithms for the identifiers a window collects: the resident ID number
//! (GB 11643-1999) and the unified social credit code (GB 32100-2015). Pure functions, no I/O.

use chrono::NaiveDate;

/// Why a resident ID number is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ResidentIdError {
    #[error("must be 18 characters: 17 digits and a digit or X")]
    Format,
    #[error("the birth date in positions 7–14 does not exist")]
    Date,
    #[error("the check character does not match (expected {expected})")]
    CheckDigit { expected: char },
}

const ID_WEIGHTS: [u32; 17] = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK: &[u8; 11] = b"10X98765432";

/// Computes the GB 11643 check character of the first 17 digits.
/// Returns `None` when `first17` is not 17 ASCII digits.
pub fn resident_id_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let sum: u32 = bytes
        .iter()
        .zip(ID_WEIGHTS)
        .map(|(b, w)| u32::from(b - b'0') * w)
        .sum();
    Some(ID_CHECK[(sum % 11) as usize] as char)
}

/// Validates an 18-character resident ID number (already normalised: upper-case `X`).
/// Region codes are not checked: retired codes stay valid on old cards.
pub fn check_resident_id(id: &str) -> Result<(), ResidentIdError> {
    let bytes = id.as_bytes();
    if bytes.len() != 18
        || !bytes[..17].iter().all(u8::is_ascii_digit)
        || !(bytes[17].is_ascii_digit() || bytes[17] == b'X')
    {
        return Err(ResidentIdError::Format);
    }
    if birth_date(&id[6..14]).is_none() {
        return Err(ResidentIdError::Date);
    }
    let expected = resident_id_check_char(&id[..17]).ok_or(ResidentIdError::Format)?;
    if bytes[17] as char != expected {
        return Err(ResidentIdError::CheckDigit { expected });
    }
    Ok(())
}

fn birth_date(yyyymmdd: &str) -> Option<NaiveDate> {
    let y = yyyymmdd[0..4].parse().ok()?;
    let m = yyyymmdd[4..6].parse().ok()?;
    let d = yyyymmdd[6..8].parse().ok()?;
    let date = NaiveDate::from_ymd_opt(y, m, d)?;
    (y >= 1800).then_some(date)
}

/// Upgrades a legacy 15-digit resident ID number to 18 characters: `19` is inserted before the
/// two-digit birth year and the check character appended. Returns `None` when `id` is not
/// 15 digits.
pub fn upgrade_resident_id_15(id: &str) -> Option<String> {
    if id.len() != 15 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let first17 = format!("{}19{}", &id[..6], &id[6..]);
    let check = resident_id_check_char(&first17)?;
    Some(format!("{first17}{check}"))
}

/// Why a unified social credit code is not valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CreditCodeError {
    #[error("must be 18 characters from 0-9 and A-Z without I, O, S, V, Z")]
    Format,
    #[error("the check character does not match (expected {expected})")]
    Check { expected: char },
}

const USCC_ALPHABET: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [
    1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28,
];

fn uscc_index(c: u8) -> Option<u32> {
    USCC_ALPHABET.iter().position(|&a| a == c).map(|i| i as u32)
}

/// Computes the GB 32100 check character of the first 17 characters.
pub fn credit_code_check_char(first17: &str) -> Option<char> {
    let bytes = first17.as_bytes();
    if bytes.len() != 17 {
        return None;
    }
    let mut sum = 0;
    for (b, w) in bytes.iter().zip(USCC_WEIGHTS) {
        sum += uscc_index(*b)? * w;
    }
    Some(USCC_ALPHABET[((31 - sum % 31) % 31) as usize] as char)
}

/// Validates an 18-character unified social credit code (already upper-cased).
pub fn check_credit_code(code: &str) -> Result<(), CreditCodeError> {
    let bytes = code.as_bytes();
    if bytes.len() != 18 || !bytes.iter().all(|&b| uscc_index(b).is_some()) {
        return Err(CreditCodeError::Format);
    }
    let expected = credit_code_check_char(&code[..17]).ok_or(CreditCodeError::Format)?;
    if bytes[17] as char != expected {
        return Err(CreditCodeError::Check { expected });
    }
    Ok(())
}

/// True for an 11-digit mainland mobile number (`1[3-9]` followed by nine digits).
pub fn is_mobile(number: &str) -> bool {
    let b = number.as_bytes();
    b.len() == 11
        && b[0] == b'1'
        && (b'3'..=b'9').contains(&b[1])
        && b.iter().all(u8::is_ascii_digit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn documented_resident_ids_are_valid() {
        for id in [
            "11010519491231002X",
            "440524188001010014",
            "64010419800315001X",
        ] {
            assert_eq!(check_resident_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn seller_id_of_the_deficient_example_fails_its_check_digit() {
        assert!(matches!(
            check_resident_id("640104198003150011"),
            Err(ResidentIdError::CheckDigit { .. })
        ));
    }

    #[test]
    fn impossible_birth_date_is_reported_as_a_date_error() {
        let first17 = "11010519490231002";
        let id = format!("{first17}{}", resident_id_check_char(first17).unwrap());
        assert_eq!(check_resident_id(&id), Err(ResidentIdError::Date));
    }

    #[test]
    fn fifteen_digit_id_is_upgraded() {
        // 110105491231002 is the legacy form of 11010519491231002X.
        assert_eq!(
            upgrade_resident_id_15("110105491231002").as_deref(),
            Some("11010519491231002X")
        );
    }

    #[test]
    fn documented_credit_codes_are_valid() {
        for code in [
            "12100000400009880K",
            "91350100M000100Y43",
            "91640104MA76L8Q23H",
            "116401000101330185",
            "11640100010133034T",
            "12640100010133050D",
        ] {
            assert_eq!(check_credit_code(code), Ok(()), "{code}");
        }
    }

    #[test]
    fn credit_code_with_forbidden_letter_is_a_format_error() {
        assert_eq!(
            check_credit_code("91350100M000100I43"),
            Err(CreditCodeError::Format)
        );
    }

    fn birth_dates() -> impl Strategy<Value = String> {
        (1900i32..2025, 1u32..=12, 1u32..=28).prop_map(|(y, m, d)| format!("{y:04}{m:02}{d:02}"))
    }

    proptest! {
        #[test]
        fn generated_resident_ids_pass(region in "[1-6][0-9]{5}", birth in birth_dates(), seq in "[0-9]{3}") {
            let first17 = format!("{region}{birth}{seq}");
            let id = format!("{first17}{}", resident_id_check_char(&first17).unwrap());
            prop_assert_eq!(check_resident_id(&id), Ok(()));
        }

        #[test]
        fn any_single_changed_character_of_a_resident_id_fails(
            region in "[1-6][0-9]{5}", birth in birth_dates(), seq in "[0-9]{3}",
            pos in 0usize..18, replacement in prop::sample::select(b"0123456789X".to_vec()),
        ) {
            let first17 = format!("{region}{birth}{seq}");
            let id = format!("{first17}{}", resident_id_check_char(&first17).unwrap());
            let mut bytes = id.clone().into_bytes();
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(check_resident_id(&changed).is_err(), "{} passed", changed);
        }

        #[test]
        fn generated_credit_codes_pass(first17 in "[0-9A-HJ-NP-RTUWXY]{17}") {
            let code = format!("{first17}{}", credit_code_check_char(&first17).unwrap());
            prop_assert_eq!(check_credit_code(&code), Ok(()));
        }

        #[test]
        fn any_single_changed_character_of_a_credit_code_fails(
            first17 in "[0-9A-HJ-NP-RTUWXY]{17}", pos in 0usize..18,
            replacement in prop::sample::select(USCC_ALPHABET.to_vec()),
        ) {
            let code = format!("{first17}{}", credit_code_check_char(&first17).unwrap());
            let mut bytes = code.clone().into_bytes();
            prop_assume!(bytes[pos] != replacement);
            bytes[pos] = replacement;
            let changed = String::from_utf8(bytes).unwrap();
            prop_assert!(check_credit_code(&changed).is_err(), "{} passed", changed);
        }
    }
}
