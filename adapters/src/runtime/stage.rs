//! The stage protocol of a department's queue: where a task message is in the adapter's work, as
//! its headers say (a task to submit, or a department case to poll), and the header helpers every
//! reader of a delivery uses. The one place that reads and writes the stage headers; their names
//! are the constants of [`yichuang::bus::headers`], shared with the gateway.

use lapin::message::Delivery;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use yichuang::bus::headers as hdr;

/// Where a task message is in the adapter's protocol, as its headers say: the one place that
/// reads and writes the stage headers (names in [`yichuang::bus::headers`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stage {
    /// A task to hand to the department (after a lookup): its `attempt`-th try, from 1.
    Submit { attempt: u32 },
    /// A case the department has, asked about again.
    Poll(Polling),
}

/// Where the polling of a department's case stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Polling {
    /// The department's number for the case; empty while its system has not given one.
    pub department_case_number: String,
    /// Polls so far.
    pub polls: u32,
    /// The last step seen (published as progress).
    pub step: String,
}

impl Polling {
    /// The same case, one poll further.
    pub fn polled(self) -> Polling {
        Polling {
            polls: self.polls + 1,
            ..self
        }
    }
}

impl Stage {
    /// The stage of a delivery.
    pub fn of(delivery: &Delivery) -> Stage {
        Stage::from_headers(delivery.properties.headers().as_ref())
    }

    /// The stage headers say: no `stage` header is a task to submit (attempt 1 if unsaid).
    pub fn from_headers(headers: Option<&FieldTable>) -> Stage {
        let get = |name: &str| headers.and_then(|h| h.inner().get(name));
        let text = |name: &str| get(name).and_then(text_value);
        let int = |name: &str| get(name).and_then(int_value);
        if text(hdr::STAGE).as_deref() == Some(hdr::STAGE_POLL) {
            Stage::Poll(Polling {
                department_case_number: text(hdr::DEPARTMENT_CASE_NUMBER).unwrap_or_default(),
                polls: int(hdr::POLLS).unwrap_or(0),
                step: text(hdr::STEP).unwrap_or_default(),
            })
        } else {
            Stage::Submit {
                attempt: int(hdr::ATTEMPT).unwrap_or(1).max(1),
            }
        }
    }

    /// Writes the stage into the headers of the task's next message.
    pub fn write(&self, headers: &mut FieldTable) {
        match self {
            Stage::Submit { attempt } => {
                headers.insert(
                    ShortString::from(hdr::ATTEMPT),
                    AMQPValue::LongInt(*attempt as i32),
                );
            }
            Stage::Poll(Polling {
                department_case_number,
                polls,
                step,
            }) => {
                let text = |v: &str| AMQPValue::LongString(v.into());
                headers.insert(ShortString::from(hdr::STAGE), text(hdr::STAGE_POLL));
                headers.insert(
                    ShortString::from(hdr::DEPARTMENT_CASE_NUMBER),
                    text(department_case_number),
                );
                headers.insert(
                    ShortString::from(hdr::POLLS),
                    AMQPValue::LongInt(*polls as i32),
                );
                headers.insert(ShortString::from(hdr::STEP), text(step));
            }
        }
    }
}

pub(super) fn header<'a>(delivery: &'a Delivery, name: &str) -> Option<&'a AMQPValue> {
    delivery.properties.headers().as_ref()?.inner().get(name)
}

pub(super) fn text_header(delivery: &Delivery, name: &str) -> Option<String> {
    text_value(header(delivery, name)?)
}

pub(super) fn text_value(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(s.to_string()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        _ => None,
    }
}

/// The headers a task's next message carries on: the delivery's, less the mark of a
/// republished stalled task (the chain it starts is an ordinary one).
pub(super) fn continued_headers(delivery: &Delivery) -> FieldTable {
    let mut headers = FieldTable::default();
    if let Some(old) = delivery.properties.headers() {
        for (k, v) in old.inner() {
            if k.as_str() != hdr::REPAIR {
                headers.insert(k.clone(), v.clone());
            }
        }
    }
    headers
}

pub(super) fn int_header(delivery: &Delivery, name: &str) -> Option<u32> {
    int_value(header(delivery, name)?)
}

pub(super) fn int_value(value: &AMQPValue) -> Option<u32> {
    match value {
        AMQPValue::LongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongLongInt(v) => u32::try_from(*v).ok(),
        AMQPValue::ShortInt(v) => u32::try_from(*v).ok(),
        AMQPValue::LongUInt(v) => Some(*v),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stage_written_reads_back_the_same_and_no_stage_is_a_first_submit() {
        assert_eq!(Stage::from_headers(None), Stage::Submit { attempt: 1 });
        for stage in [
            Stage::Submit { attempt: 3 },
            Stage::Poll(Polling {
                department_case_number: "SCJG2019000001".into(),
                polls: 7,
                step: "审核".into(),
            }),
        ] {
            let mut headers = FieldTable::default();
            stage.write(&mut headers);
            assert_eq!(Stage::from_headers(Some(&headers)), stage);
        }
    }
}
