//! The little XML the simulated XML systems need: reading a request into its elements and
//! leaves, and writing answers with text escaped. Written apart from the adapter's own reader
//! on purpose, so a test pits two implementations against each other.

use std::collections::BTreeMap;

use quick_xml::Reader;
use quick_xml::events::Event;

/// A request read: every element's local name in document order, leaf name → text (the last,
/// when a name comes again), and leaf name → every text in order (for lists).
#[derive(Debug, Default)]
pub struct Parsed {
    pub elements: Vec<String>,
    pub leaves: BTreeMap<String, String>,
    pub lists: BTreeMap<String, Vec<String>>,
}

impl Parsed {
    /// The local name of the first element after `name` (the operation after `Body`).
    pub fn after(&self, name: &str) -> Option<&str> {
        let at = self.elements.iter().position(|e| e == name)?;
        self.elements.get(at + 1).map(String::as_str)
    }
}

/// Reads a document; the error says what is wrong.
pub fn parse(xml: &str) -> Result<Parsed, String> {
    let mut reader = Reader::from_str(xml);
    let mut parsed = Parsed::default();
    let mut open: Vec<(String, bool, String)> = Vec::new();
    loop {
        let event = reader.read_event().map_err(|e| e.to_string())?;
        match event {
            Event::Start(e) => {
                if let Some(p) = open.last_mut() {
                    p.1 = true;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                parsed.elements.push(name.clone());
                open.push((name, false, String::new()));
            }
            Event::Empty(e) => {
                if let Some(p) = open.last_mut() {
                    p.1 = true;
                }
                let name = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                parsed.elements.push(name.clone());
                parsed
                    .lists
                    .entry(name.clone())
                    .or_default()
                    .push(String::new());
                parsed.leaves.insert(name, String::new());
            }
            Event::Text(t) => {
                if let Some(top) = open.last_mut() {
                    top.2.push_str(&t.xml_content().map_err(|e| e.to_string())?);
                }
            }
            Event::CData(t) => {
                if let Some(top) = open.last_mut() {
                    top.2.push_str(&t.xml_content().map_err(|e| e.to_string())?);
                }
            }
            Event::GeneralRef(r) => {
                let text = match r.resolve_char_ref().map_err(|e| e.to_string())? {
                    Some(c) => c.to_string(),
                    None => {
                        let name = r.decode().map_err(|e| e.to_string())?;
                        quick_xml::escape::resolve_predefined_entity(&name)
                            .ok_or(format!("unknown entity &{name};"))?
                            .to_string()
                    }
                };
                if let Some(top) = open.last_mut() {
                    top.2.push_str(&text);
                }
            }
            Event::End(_) => {
                let (name, children, text) = open.pop().ok_or("unbalanced end tag")?;
                if !children {
                    let text = text.trim().to_string();
                    parsed
                        .lists
                        .entry(name.clone())
                        .or_default()
                        .push(text.clone());
                    parsed.leaves.insert(name, text);
                }
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if !open.is_empty() || parsed.elements.is_empty() {
        return Err("not a complete XML document".into());
    }
    Ok(parsed)
}

/// Escapes text for element content.
pub fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// `<name>text</name>` for each pair.
pub fn elements<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| format!("<{k}>{}</{k}>", escape(v)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_is_read_into_its_operation_and_leaves() {
        let p = parse(
            "<s:Envelope xmlns:s=\"urn:s\"><s:Body><t:SubmitCase xmlns:t=\"urn:t\">\
             <ywlsh>T-1</ywlsh><sqrmc>老马家&lt;餐饮&gt; &amp; 小吃</sqrmc><bz/></t:SubmitCase>\
             </s:Body></s:Envelope>",
        )
        .unwrap();
        assert_eq!(p.after("Body"), Some("SubmitCase"));
        assert_eq!(p.leaves["sqrmc"], "老马家<餐饮> & 小吃");
        assert_eq!(p.leaves["bz"], "");
        let p =
            parse("<r><clqd><cl><clmc>甲</clmc></cl><cl><clmc>乙</clmc></cl></clqd></r>").unwrap();
        assert_eq!(p.lists["clmc"], ["甲", "乙"]);
        assert!(parse("<a><b></a>").is_err() && parse("系统").is_err());
        assert_eq!(
            elements([("m", "<&>")]),
            "<m>&lt;&amp;&gt;</m>",
            "answers are escaped"
        );
    }
}
