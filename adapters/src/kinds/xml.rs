//! XML as the HTTP kind needs it (XML and SOAP bodies and answers): writing elements with their
//! text escaped, reading an answer into a flat [`Answer`] of its leaf elements, and finding out
//! which character set a legacy answer is in. It owns no protocol: envelopes, forms and what an
//! answer means belong to the description.

use std::borrow::Cow;

use quick_xml::Reader;
use quick_xml::events::Event;

use crate::system::Answer;

/// Whether `name` can be an element name (an XML `Name` without a prefix). Element names come
/// from department files, so they are checked when the department is built, not when a task
/// arrives.
pub fn is_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    (first.is_alphabetic() || first == '_')
        && chars.all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

/// Text made safe for element content and attribute values: `& < > " '` become references,
/// and characters XML 1.0 cannot carry at all (most C0 controls), which no escaping can save,
/// are dropped.
pub fn escape(text: &str) -> Cow<'_, str> {
    let legal = |c: char| {
        matches!(c, '\t' | '\n' | '\r') || (c >= ' ' && c != '\u{FFFE}' && c != '\u{FFFF}')
    };
    if text.chars().all(legal) {
        quick_xml::escape::escape(text)
    } else {
        let kept: String = text.chars().filter(|&c| legal(c)).collect();
        Cow::Owned(quick_xml::escape::escape(kept.as_str()).into_owned())
    }
}

/// Appends `<name>text</name>`; `name` must satisfy [`is_name`].
pub fn element(out: &mut String, name: &str, text: &str) {
    out.push('<');
    out.push_str(name);
    out.push('>');
    out.push_str(&escape(text));
    out.push_str("</");
    out.push_str(name);
    out.push('>');
}

/// Reads a document into its leaf elements: local name (prefix dropped) → trimmed text, with
/// entity and character references resolved and CDATA taken as text. Elements with children
/// and attributes are not kept; a leaf name met again (a list) has its texts joined with `,`,
/// which the result mapping splits.
pub fn flatten(xml: &str) -> Result<Answer, String> {
    let mut reader = Reader::from_str(xml);
    // Open elements: local name, whether it has element children, its text so far.
    let mut open: Vec<(String, bool, String)> = Vec::new();
    let mut out = Answer::new();
    let keep = |out: &mut Answer, name: String, text: &str| {
        let text = text.trim();
        match out.get_mut(&name) {
            Some(old) if !text.is_empty() => {
                if !old.is_empty() {
                    old.push(',');
                }
                old.push_str(text);
            }
            Some(_) => {}
            None => {
                out.insert(name, text.to_string());
            }
        }
    };
    let bad = |reader: &Reader<&[u8]>, e: &dyn std::fmt::Display| {
        format!("malformed XML at byte {}: {e}", reader.buffer_position())
    };
    loop {
        match reader.read_event().map_err(|e| bad(&reader, &e))? {
            Event::Start(e) => {
                if let Some(parent) = open.last_mut() {
                    parent.1 = true;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                open.push((name, false, String::new()));
            }
            Event::Empty(e) => {
                if let Some(parent) = open.last_mut() {
                    parent.1 = true;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                keep(&mut out, name, "");
            }
            Event::Text(t) => {
                if let Some(top) = open.last_mut() {
                    top.2
                        .push_str(&t.xml_content().map_err(|e| bad(&reader, &e))?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = open.last_mut() {
                    top.2
                        .push_str(&t.xml_content().map_err(|e| bad(&reader, &e))?);
                }
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref().map_err(|e| bad(&reader, &e))? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| bad(&reader, &e))?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or_else(|| bad(&reader, &format!("unknown entity &{name};")))?
                            .to_string()
                    }
                };
                if let Some(top) = open.last_mut() {
                    top.2.push_str(&resolved);
                }
            }
            Event::End(_) => {
                let (name, has_children, text) = open
                    .pop()
                    .ok_or_else(|| bad(&reader, &"a closing tag with no opening one"))?;
                if !has_children {
                    keep(&mut out, name, &text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if let Some((name, ..)) = open.last() {
        return Err(format!("malformed XML: <{name}> is never closed"));
    }
    if out.is_empty() {
        return Err("not an XML document (no elements)".into());
    }
    Ok(out)
}

/// The character set a `Content-Type` header names (`text/xml; charset=GBK`), if encoding_rs
/// knows it.
pub fn charset(content_type: &str) -> Option<&'static encoding_rs::Encoding> {
    content_type.split(';').skip(1).find_map(|p| {
        let (k, v) = p.split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("charset") {
            return None;
        }
        encoding_rs::Encoding::for_label(v.trim().trim_matches('"').as_bytes())
    })
}

/// The encoding an XML declaration names (`<?xml version="1.0" encoding="GBK"?>`), if any.
pub fn declared_encoding(body: &[u8]) -> Option<&'static encoding_rs::Encoding> {
    let head = body.strip_prefix(b"<?xml")?;
    let end = head.windows(2).position(|w| w == b"?>")?;
    let decl = std::str::from_utf8(&head[..end]).ok()?;
    let at = decl.find("encoding")?;
    let rest = decl[at + "encoding".len()..]
        .trim_start()
        .strip_prefix('=')?
        .trim_start();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let value = rest[1..].split(quote).next()?;
    encoding_rs::Encoding::for_label(value.as_bytes())
}

/// An answer's text: in the character set its `Content-Type` names, else the one its XML
/// declaration names, else `default`. Undecodable bytes become U+FFFD rather than failing the
/// call: the fields that matter are then still readable.
pub fn decode(
    body: &[u8],
    content_type: Option<&str>,
    default: &'static encoding_rs::Encoding,
) -> String {
    let encoding = content_type
        .and_then(charset)
        .or_else(|| declared_encoding(body))
        .unwrap_or(default);
    encoding.decode(body).0.into_owned()
}

/// A short, masked excerpt of legacy text for logs and transient reasons (which are logged):
/// personal data in it is masked.
pub fn excerpt(text: &str) -> String {
    let short: String = text.chars().take(200).collect();
    yichuang::privacy::mask_free_text(short.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leaves_are_flattened_with_references_resolved_and_lists_joined() {
        let a = flatten(
            "<?xml version=\"1.0\"?><r:Response xmlns:r=\"urn:x\"><head><rtnMsg>请求成功</rtnMsg></head>\
             <body><mc>A &amp; B &#x4E2D;&#25991;</mc><cl>租赁合同</cl><cl>平面图</cl><empty/>\
             <cd><![CDATA[<b>原样</b>]]></cd></body></r:Response>",
        )
        .unwrap();
        assert_eq!(a["rtnMsg"], "请求成功");
        assert_eq!(a["mc"], "A & B 中文");
        assert_eq!(a["cl"], "租赁合同,平面图");
        assert_eq!(a["empty"], "");
        assert_eq!(a["cd"], "<b>原样</b>");
        assert!(!a.contains_key("body") && !a.contains_key("Response"));
    }

    #[test]
    fn malformed_documents_say_so() {
        assert!(flatten("<a><b></a>").unwrap_err().contains("malformed"));
        assert!(flatten("<a>").unwrap_err().contains("never closed"));
        assert!(flatten("系统维护中").unwrap_err().contains("no elements"));
    }

    #[test]
    fn escaping_round_trips_and_drops_what_xml_cannot_carry() {
        let nasty = "<x> & \"q\" 'a' 马强\u{1}\u{8}";
        let mut doc = String::from("<r>");
        element(&mut doc, "v", nasty);
        doc.push_str("</r>");
        assert!(!doc.contains("<x>") && !doc.contains('\u{1}'));
        assert_eq!(flatten(&doc).unwrap()["v"], "<x> & \"q\" 'a' 马强");
    }

    #[test]
    fn names_are_checked() {
        assert!(is_name("ywlsh") && is_name("_a.b-1") && is_name("受理编号"));
        assert!(!is_name("") && !is_name("1a") && !is_name("a b") && !is_name("a:b"));
    }

    #[test]
    fn the_charset_comes_from_the_header_then_the_declaration_then_the_default() {
        let (gbk, _, _) =
            encoding_rs::GBK.encode("<?xml version=\"1.0\" encoding=\"GBK\"?><m>请求成功</m>");
        assert_eq!(
            flatten(&decode(&gbk, None, encoding_rs::UTF_8)).unwrap()["m"],
            "请求成功"
        );
        assert_eq!(
            flatten(&decode(
                &gbk,
                Some("text/xml; charset=\"gbk\""),
                encoding_rs::UTF_8
            ))
            .unwrap()["m"],
            "请求成功"
        );
        let (plain, _, _) = encoding_rs::GBK.encode("<m>请求成功</m>");
        assert_eq!(
            flatten(&decode(&plain, Some("text/xml"), encoding_rs::GBK)).unwrap()["m"],
            "请求成功"
        );
        assert_eq!(
            decode(
                "<m>中文</m>".as_bytes(),
                Some("text/xml;charset=utf-8"),
                encoding_rs::GBK
            ),
            "<m>中文</m>"
        );
    }
}
