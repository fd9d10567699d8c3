//! A rule whose evaluation panics the CEL interpreter is contained: the rule
//! is disabled (until the rule set is reloaded), counted, and the engine goes
//! on to the next rules.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;

use failover::rules::{Action, RequestAttrs, RuleEngine};

/// Expressions known to panic cel-interpreter 0.10 at evaluation in a build
/// with overflow checks (the test profile): negating `i64::MIN`.
const PANICS: &[&str] = &["-(-9223372036854775807 - 1) == 0", "ctx.user == 'u' && -(-9223372036854775807 - 1) < 0"];

fn request() -> RequestAttrs {
    RequestAttrs {
        method: "GET".into(),
        path: "/posts/1".into(),
        headers: HashMap::new(),
        region: "eu".into(),
        tenant: "t".into(),
        user: "u".into(),
        cell: "eu-1".into(),
    }
}

#[test]
fn a_panicking_rule_is_disabled_and_the_engine_goes_on() {
    for expr in PANICS {
        let engine = RuleEngine::new();
        let yaml = format!(
            "rules:\n  - name: boom\n    when: \"{expr}\"\n    action: {{ drain: eu-1 }}\n  - name: fallback\n    when: \"request.path.startsWith('/posts')\"\n    action: {{ route_cell: eu-2 }}\n"
        );
        engine.load_str(&yaml).unwrap();
        assert!(engine.disabled().is_empty());
        let (_, _, errors_before) = engine.counts();

        // the panicking rule is skipped, the next one matches
        let m = engine.evaluate(&request(), &HashMap::new()).expect("the fallback rule matches");
        assert_eq!(&*m.rule, "fallback", "{expr}");
        assert_eq!(m.action, Action::RouteCell("eu-2".parse().unwrap()));
        assert_eq!(engine.disabled(), vec!["boom".to_string()], "{expr}");
        assert_eq!(engine.counts().2, errors_before + 1);

        // disabled: not evaluated again (no second error)
        let m = engine.evaluate(&request(), &HashMap::new()).unwrap();
        assert_eq!(&*m.rule, "fallback");
        assert_eq!(engine.counts().2, errors_before + 1, "a disabled rule is not evaluated again");

        // a reload brings a fixed rule back
        engine
            .load_str("rules:\n  - name: boom\n    when: \"request.method == 'GET'\"\n    action: { drain: eu-1 }\n")
            .unwrap();
        assert!(engine.disabled().is_empty());
        assert_eq!(&*engine.evaluate(&request(), &HashMap::new()).unwrap().rule, "boom");
    }
}

/// The same containment for the control rules the controller evaluates
/// without a request: the panicking rule is disabled, the cohort after it
/// still acts.
#[test]
fn a_panicking_control_rule_is_disabled_and_the_next_ones_still_act() {
    // control rules see no request: the known panics, guarded by `now`
    // instead of the user
    for expr in [PANICS[0], "now.hour >= 0 && -(-9223372036854775807 - 1) < 0"] {
        let engine = RuleEngine::new();
        let yaml = format!(
            "rules:\n  - name: boom\n    when: \"{expr}\"\n    action: {{ hold_drain: eu-1 }}\n  - name: canary\n    when: \"now.hour >= 0\"\n    action: {{ cohort: {{ region: eu, percent: 10, to: eu-canary }} }}\n"
        );
        engine.load_str(&yaml).unwrap();
        let m = engine.evaluate_control(&HashMap::new());
        assert_eq!(m.iter().map(|m| &*m.rule).collect::<Vec<_>>(), vec!["canary"], "{expr}");
        assert_eq!(engine.disabled(), vec!["boom".to_string()], "{expr}");
        assert_eq!(engine.evaluate_control(&HashMap::new()).len(), 1);
    }
}
