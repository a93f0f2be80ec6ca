//! The items a submission applies for and the bundle (一件事) they form: each item looked up in
//! the acceptance list and ordered as its bundle orders them, the dependencies among the
//! submitted items, and the mode each is handled in (一般受理, 告知承诺制, 容缺受理 where the
//! item allows it).
//!
//! Owns: which items, in which order, waiting for which, in which mode. It never checks what
//! an item requires (materials and fields have their own modules), never counts a deadline
//! (that is the plan's), and never stores or sends anything.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use super::labels::mode_zh;
use super::{Intake, Validator};
use crate::catalog::{BundleOrder, Item, Mode};
use crate::proto::v1::{AcceptanceMode, DeficiencyCode as Code, Submission};

impl Intake {
    /// Looks up the submitted items, in bundle order when they form a bundle.
    pub(super) fn resolve_items<'c>(&'c self, s: &Submission, v: &mut Validator) -> Vec<&'c Item> {
        let catalog = &*self.catalog;
        let bundle = if s.bundle_code.is_empty() {
            None
        } else {
            let b = catalog.bundles.get(&s.bundle_code);
            if b.is_none() {
                v.push(
                    Code::Bundle,
                    "bundleCode",
                    format!("「{}」不是受理清单中的一件事主题。", s.bundle_code),
                    |_| {},
                );
            }
            b
        };
        if s.items.is_empty() {
            v.push(Code::Items, "items", "未选择申请事项。".into(), |_| {});
        }
        let mut seen = HashSet::new();
        let mut items = Vec::new();
        for (i, req) in s.items.iter().enumerate() {
            let path = format!("items[{i}].itemCode");
            let Some(item) = catalog.items.get(&req.item_code) else {
                v.push(
                    Code::ItemUnknown,
                    &path,
                    format!("事项编码「{}」不在受理清单中。", req.item_code),
                    |_| {},
                );
                continue;
            };
            if !seen.insert(req.item_code.as_str()) {
                v.push(
                    Code::Items,
                    &path,
                    format!("事项「{}」重复申请。", item.name),
                    |d| d.item_code = req.item_code.clone(),
                );
                continue;
            }
            if let Some(b) = bundle
                && !b.items.iter().any(|x| x.get_ref() == &req.item_code)
            {
                v.push(
                    Code::Bundle,
                    &path,
                    format!("事项「{}」不属于一件事「{}」。", item.name, b.name),
                    |d| d.item_code = req.item_code.clone(),
                );
                continue;
            }
            items.push(item);
        }
        if let Some(b) = bundle {
            let pos = |it: &Item| {
                b.items
                    .iter()
                    .position(|x| x.get_ref() == it.code.get_ref())
                    .unwrap_or(usize::MAX)
            };
            items.sort_by_key(|it| pos(it));
        }
        items
    }

    /// Dependencies among the submitted items, from the bundle's order: per item (in the order
    /// of `items`), the indexes of the items it waits for.
    pub(super) fn dependencies(&self, s: &Submission, items: &[&Item]) -> Vec<Vec<usize>> {
        let bundle = self.catalog.bundles.get(&s.bundle_code);
        let order = bundle.map(BundleOrder::of).unwrap_or_default();
        let index: BTreeMap<&str, usize> = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.code.get_ref().as_str(), i))
            .collect();
        items
            .iter()
            .map(|it| submitted_prerequisites(&order, it.code.get_ref(), &index))
            .collect()
    }

    /// The mode each item is handled in.
    pub(super) fn item_modes(
        &self,
        s: &Submission,
        items: &[&Item],
        v: &mut Validator,
    ) -> Vec<AcceptanceMode> {
        let requested = AcceptanceMode::try_from(s.mode).unwrap_or(AcceptanceMode::Unspecified);
        let wanted = match requested {
            AcceptanceMode::Unspecified => {
                v.push(
                    Code::ModeNotAllowed,
                    "mode",
                    "未选择受理方式（一般受理、告知承诺或容缺受理）。".into(),
                    |_| {},
                );
                return vec![AcceptanceMode::Standard; items.len()];
            }
            AcceptanceMode::Standard => Mode::Standard,
            AcceptanceMode::Commitment => Mode::Commitment,
            AcceptanceMode::Tolerant => Mode::Tolerant,
        };
        if wanted == Mode::Tolerant {
            // 容缺 applies where the item allows it; the other items are checked as standard.
            if !items.is_empty() && !items.iter().any(|it| it.modes.contains(&Mode::Tolerant)) {
                v.push(
                    Code::ModeNotAllowed,
                    "mode",
                    "所申请事项均不适用容缺受理，请选择一般受理。".into(),
                    |_| {},
                );
            }
            return items
                .iter()
                .map(|it| {
                    if it.modes.contains(&Mode::Tolerant) {
                        AcceptanceMode::Tolerant
                    } else {
                        if !it.modes.contains(&Mode::Standard) {
                            v.push(
                                Code::ModeNotAllowed,
                                "mode",
                                format!("事项「{}」不适用容缺受理，也不适用一般受理。", it.name),
                                |d| d.item_code = it.code.get_ref().clone(),
                            );
                        }
                        AcceptanceMode::Standard
                    }
                })
                .collect();
        }
        for it in items {
            if !it.modes.contains(&wanted) {
                v.push(
                    Code::ModeNotAllowed,
                    "mode",
                    format!("事项「{}」不适用{}。", it.name, mode_zh(wanted)),
                    |d| d.item_code = it.code.get_ref().clone(),
                );
            }
        }
        vec![requested; items.len()]
    }
}

/// Indexes of submitted items that `item` waits for: its prerequisites in the bundle, and for a
/// prerequisite not submitted, that prerequisite's own prerequisites.
fn submitted_prerequisites(
    order: &BundleOrder,
    item: &str,
    index: &BTreeMap<&str, usize>,
) -> Vec<usize> {
    let mut out = BTreeSet::new();
    let mut stack: Vec<&str> = order
        .prerequisites(item)
        .iter()
        .map(String::as_str)
        .collect();
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        if !seen.insert(p) {
            continue;
        }
        match index.get(p) {
            Some(&i) => {
                out.insert(i);
            }
            None => stack.extend(order.prerequisites(p).iter().map(String::as_str)),
        }
    }
    out.into_iter().collect()
}

/// True when item `i` waits (transitively) for the submitted item with code `code`.
pub(super) fn depends_on_item(
    items: &[&Item],
    depends: &[Vec<usize>],
    i: usize,
    code: &str,
) -> bool {
    let mut stack = depends[i].clone();
    let mut seen = HashSet::new();
    while let Some(p) = stack.pop() {
        if items[p].code.get_ref() == code {
            return true;
        }
        if seen.insert(p) {
            stack.extend(&depends[p]);
        }
    }
    false
}
