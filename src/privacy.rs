//! Masking of personal data (ID numbers, credit codes of individuals, mobile numbers, names,
//! addresses) before it reaches a log line, a span, an error message or an audit record that
//! outlives the case. This module owns the masking rules; it never decides what to log.

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
