#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::{Duration, UNIX_EPOCH};

use super::*;
use crate::load::{Op, Record, User};

fn user(region: &str) -> User {
    User { key: format!("{region}-user-0"), region: region.into(), home: "a".into(), failover: None, token: String::new() }
}

fn like(id: &str, ok: bool) -> Record {
    Record { user: 0, op: Op::Like, post: "p".into(), start_ms: 0, end_ms: 10, ok, served_by: Some("a".into()), id: ok.then(|| id.to_string()) }
}

fn args() -> ChaosArgs {
    ChaosArgs { seed: Some(7), schedules: 1, duration: 20, rps: 50, kinds: vec![], controllers: 1, processes_per_cell: 1, config: None, dry_run: false }
}

/// Three cells holding `state` with one digest, all active.
fn judged(records: &[Record], state: &str) -> Outcome {
    let table = DemoConfig::load(None).unwrap().routing_table_with(&|_| vec!["http://127.0.0.1:1".into()]).unwrap();
    let cells: Vec<String> = table.cells.iter().map(|c| c.id.to_string()).collect();
    let states = cells.iter().map(|c| (c.clone(), Some((state.to_string(), 1)))).collect();
    let views = evidence::views(&states, Some(&table));
    let history = evidence::history(records, &[user("eu")], UNIX_EPOCH + Duration::from_secs(1));
    let mut plan = Plan::new(Schedule { seed: 7, faults: vec![] }, cells, None);
    let replicas = plan.cells.clone();
    plan.judge(executor::Applied::default(), &history, &replicas, &views, &[], &DemoConfig::load(None).unwrap());
    plan.outcome.unwrap()
}

#[test]
fn ids_come_from_comment_and_like_id_sets_only() {
    let ids = evidence::ids_in(r#"{"likes:p":2,"like_ids:p":["1","2"],"comments:q":["3"],"other":["9"]}"#);
    assert_eq!(ids.into_iter().collect::<Vec<_>>(), ["1", "2", "3"]);
    assert!(evidence::ids_in("not json").is_empty());
}

#[test]
fn a_healed_run_holding_every_acked_id_passes() {
    let records = [like("1", true), like("", false)];
    let o = judged(&records, r#"{"like_ids:p":["1"]}"#);
    assert!(o.verdict.ok(), "{:?}", o.verdict);
    assert_eq!((o.verdict.acked, o.verdict.failed), (1, 1));
    assert!(finish(&[o], &["kill_cell"], &BTreeMap::new(), &args()).is_ok());
}

#[test]
fn an_acked_id_no_cell_holds_fails_the_command_naming_the_seed() {
    // doctored: "2" was acknowledged, no cell holds it
    let records = [like("1", true), like("2", true)];
    let o = judged(&records, r#"{"like_ids:p":["1"]}"#);
    assert_eq!(o.verdict.lost.len(), 1);
    assert_eq!(o.verdict.lost[0].id, "2");
    assert_eq!(o.verdict.lost[0].missing_in.len(), 3);
    let err = finish(&[o], &["kill_cell"], &BTreeMap::new(), &args()).unwrap_err().to_string();
    assert!(err.contains("seed(s) 7") && err.contains("--seed N"), "{err}");
}

#[test]
fn kinds_a_run_cannot_do_are_named() {
    let (yes, no) = supported(1, false, true, false);
    assert!(yes.contains(&"kill_cell") && yes.contains(&"kafka_down") && yes.contains(&"clock_step") && yes.contains(&"stale_restart"));
    assert!(no.contains_key("kill_leader") && no.contains_key("redis_down"));
    let (yes, no) = supported(2, true, false, true);
    assert!(yes.contains(&"kill_leader") && yes.contains(&"redis_down") && yes.contains(&"stale_restart"));
    assert!(no.contains_key("kafka_down"));
}
