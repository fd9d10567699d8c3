//! Rules that act: what the control rules that hold now
//! ([`RuleEngine::evaluate_control`](crate::RuleEngine::evaluate_control))
//! mean for the [`Controller`](crate::Controller): a switch held back, and the
//! switches the rules themselves ask for.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use cellctx::CellId;

use crate::change::{Change, SwitchRequest};
use crate::engine::{CellPhase, Plan};
use crate::rules::{Action, CellHealthView, RuleEngine, RuleMatch};

/// The rule that holds `change` back: a `hold_drain` of the cell for a drain,
/// a `block_failback` of the cell for a ramp step or a failback.
pub(crate) fn held_by(matches: &[RuleMatch], change: &Change) -> Option<Arc<str>> {
    let wants = match change {
        Change::Drain(c) | Change::Spread { cell: c, .. } => Action::HoldDrain(c.clone()),
        Change::Ramp { cell: c, .. } | Change::Failback(c) => Action::BlockFailback(c.clone()),
        _ => return None,
    };
    matches.iter().find(|m| m.action == wants).map(|m| m.rule.clone())
}

/// Cell health as control rules see it, from the engine's plan: a serving
/// cell is healthy (score 100), a drained one not (0), a ramping one at its
/// share.
pub(crate) fn health_of(plan: &Plan) -> HashMap<CellId, CellHealthView> {
    plan.cells
        .iter()
        .map(|(c, a)| {
            let (healthy, score) = match a.phase {
                CellPhase::Serving => (true, 100),
                CellPhase::Ramping { share } => (true, (share * 100.0) as u8),
                _ => (false, 0),
            };
            (c.clone(), CellHealthView { score, healthy, error_rate: 0.0 })
        })
        .collect()
}

/// What the rules steer at one evaluation, and what they stopped steering
/// since the previous one.
#[derive(Debug, Default)]
pub(crate) struct Steering {
    /// Cells drained by a `drain` rule (failed back when it stops holding).
    forced: BTreeSet<CellId>,
    /// Cohorts in force: (region, canary) -> percent.
    cohorts: HashMap<(CellId, CellId), u8>,
}

impl Steering {
    /// The switches the rules that hold now call for, given the previous
    /// evaluation: forced drains (past the drain cap, audited as forced) and
    /// their end, cohorts moved, resized or ended.
    pub(crate) fn switches(&mut self, matches: &[RuleMatch], plan: &Plan) -> Vec<SwitchRequest> {
        let mut out = Vec::new();
        let mut forced = BTreeSet::new();
        let mut cohorts = HashMap::new();
        for m in matches {
            match &m.action {
                Action::Drain(c) if forced.insert(c.clone()) && !self.forced.contains(c) => {
                    out.push(SwitchRequest::new(Change::Drain(c.clone())).with_reason("rule: drain").with_rule(&*m.rule).forced());
                }
                Action::Cohort { region, percent, to } if !cohorts.contains_key(&(region.clone(), to.clone())) => {
                    cohorts.insert((region.clone(), to.clone()), *percent);
                    if self.cohorts.get(&(region.clone(), to.clone())) != Some(percent) {
                        let change = Change::Cohort { region: region.clone(), permille: u16::from(*percent) * 10, to: to.clone() };
                        out.push(SwitchRequest::new(change).with_reason(format!("rule: cohort {percent} %")).with_rule(&*m.rule));
                    }
                }
                _ => {}
            }
        }
        for c in self.forced.difference(&forced) {
            // the engine's view decides what comes back: a cell it drained stays down
            if plan.get(c).is_none_or(|a| a.phase == CellPhase::Serving) {
                out.push(SwitchRequest::new(Change::Failback(c.clone())).with_reason("rule: drain no longer holds").with_rule("rules"));
            }
        }
        for (region, to) in self.cohorts.keys().filter(|k| !cohorts.contains_key(*k)) {
            let change = Change::Cohort { region: region.clone(), permille: 0, to: to.clone() };
            out.push(SwitchRequest::new(change).with_reason("rule: cohort ended").with_rule("rules"));
        }
        self.forced = forced;
        self.cohorts = cohorts;
        out
    }
}

/// Evaluates `rules`' control rules against the health `plan` implies.
pub(crate) fn evaluate(rules: &RuleEngine, plan: &Plan) -> Vec<RuleMatch> {
    rules.evaluate_control(&health_of(plan))
}
