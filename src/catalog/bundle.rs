//! A 一件事 bundle's order: the prerequisites each item waits for ([`BundleOrder`]), and the
//! rules a bundle must keep — its items exist and are listed once, its steps name only its own
//! items, its order has no cycle, and a material one item produces for another comes from an
//! item ordered before. Intake reads the order to know which submitted items wait for which;
//! the catalog's checks call `check_bundle`. It never reads files and knows nothing of cases.

use std::collections::{HashMap, HashSet};

use super::load::{Defined, Origin};
use super::model::{Bundle, Item};
use crate::config::ConfigProblem;

/// Every rule a bundle must keep; each problem is located at the code, item or step at fault.
pub(super) fn check_bundle(
    bundle: &Bundle,
    origin: &Origin,
    items: &Defined<Item>,
    problems: &mut Vec<ConfigProblem>,
) {
    let code = bundle.code.get_ref();
    let mut members = HashSet::new();
    if bundle.items.is_empty() {
        problems.push(origin.problem(&bundle.code, format!("bundle {code} has no items")));
    }
    for item in &bundle.items {
        if !items.contains_key(item.get_ref()) {
            problems.push(origin.problem(
                item,
                format!("bundle {code} names missing item {:?}", item.get_ref()),
            ));
        }
        if !members.insert(item.get_ref().clone()) {
            problems.push(origin.problem(
                item,
                format!("bundle {code} lists item {} twice", item.get_ref()),
            ));
        }
    }
    let mut edges: HashMap<&str, Vec<&str>> = HashMap::new();
    for step in &bundle.steps {
        if !members.contains(step.item.get_ref()) {
            problems.push(origin.problem(
                &step.item,
                format!(
                    "bundle {code}: step for {:?}, which is not in the bundle's items",
                    step.item.get_ref()
                ),
            ));
        }
        for before in &step.after {
            if !members.contains(before.get_ref()) {
                problems.push(origin.problem(
                    before,
                    format!(
                        "bundle {code}: {} waits for {:?}, which is not in the bundle's items",
                        step.item.get_ref(),
                        before.get_ref()
                    ),
                ));
            }
            edges
                .entry(step.item.get_ref())
                .or_default()
                .push(before.get_ref());
        }
    }
    if let Some(cycle) = find_cycle(&edges) {
        problems.push(origin.problem(
            &bundle.code,
            format!(
                "bundle {code}: its order has a cycle: {}",
                cycle.join(" → ")
            ),
        ));
        return;
    }
    // A material produced by an earlier item must come from an item that is ordered before.
    let order = BundleOrder::of(bundle);
    for member in &bundle.items {
        let Some((item, _)) = items.get(member.get_ref()) else {
            continue;
        };
        for m in &item.materials {
            if let Some(from) = &m.from_item
                && members.contains(from.get_ref())
                && !order.precedes(from.get_ref(), member.get_ref())
            {
                problems.push(origin.problem(
                    member,
                    format!("bundle {code}: {} needs {} from {}, but the bundle does not order {} before it", member.get_ref(), m.code.get_ref(), from.get_ref(), from.get_ref()),
                ));
            }
        }
    }
}

fn find_cycle<'a>(edges: &HashMap<&'a str, Vec<&'a str>>) -> Option<Vec<&'a str>> {
    fn visit<'a>(
        node: &'a str,
        edges: &HashMap<&'a str, Vec<&'a str>>,
        state: &mut HashMap<&'a str, u8>,
        path: &mut Vec<&'a str>,
    ) -> Option<Vec<&'a str>> {
        match state.get(node) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|n| *n == node).unwrap_or(0);
                let mut cycle = path[start..].to_vec();
                cycle.push(node);
                return Some(cycle);
            }
            _ => {}
        }
        state.insert(node, 1);
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(node, 2);
        None
    }
    let mut state = HashMap::new();
    let mut nodes: Vec<_> = edges.keys().copied().collect();
    nodes.sort();
    for node in nodes {
        if let Some(c) = visit(node, edges, &mut state, &mut Vec::new()) {
            return Some(c);
        }
    }
    None
}

/// The direct prerequisites of each item of a bundle.
#[derive(Debug, Clone, Default)]
pub struct BundleOrder {
    after: HashMap<String, Vec<String>>,
}

impl BundleOrder {
    /// The order a bundle declares.
    pub fn of(bundle: &Bundle) -> Self {
        let mut after: HashMap<String, Vec<String>> = HashMap::new();
        for step in &bundle.steps {
            after
                .entry(step.item.get_ref().clone())
                .or_default()
                .extend(step.after.iter().map(|a| a.get_ref().clone()));
        }
        Self { after }
    }

    /// Direct prerequisites of `item`.
    pub fn prerequisites(&self, item: &str) -> &[String] {
        self.after.get(item).map_or(&[], Vec::as_slice)
    }

    /// True when `earlier` must be approved (directly or transitively) before `later`.
    pub fn precedes(&self, earlier: &str, later: &str) -> bool {
        let mut stack = vec![later];
        let mut seen = HashSet::new();
        while let Some(node) = stack.pop() {
            for pre in self.prerequisites(node) {
                if pre == earlier {
                    return true;
                }
                if seen.insert(pre.as_str()) {
                    stack.push(pre);
                }
            }
        }
        false
    }
}
