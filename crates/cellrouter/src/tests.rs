//! Unit tests and proptest laws.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use cellctx::CellId;
use proptest::prelude::*;

use crate::*;

fn id(s: &str) -> CellId {
    CellId::new(s).unwrap()
}

fn cell(name: &str, region: &str) -> Cell {
    Cell::new(id(name), id(region), format!("http://{name}.invalid:80"))
}

/// eu-west (gdpr, allowed: eu-central) with eu-1, eu-2; eu-central with ec-1; us-east with us-1.
fn geo_table() -> RoutingTable {
    let mut eu = Region::new(id("eu-west"));
    eu.compliance = vec!["gdpr".into()];
    eu.allowed_regions = vec![id("eu-central")];
    eu.datacenter = Some(1);
    let mut ec = Region::new(id("eu-central"));
    ec.datacenter = Some(2);
    let mut us = Region::new(id("us-east"));
    us.datacenter = Some(3);
    let mut eu1 = cell("eu-1", "eu-west");
    eu1.failover = vec![id("eu-2"), id("ec-1")];
    let mut eu2 = cell("eu-2", "eu-west");
    eu2.failover = vec![id("ec-1")];
    let mut us1 = cell("us-1", "us-east");
    us1.failover = vec![id("eu-1")];
    let sr = |r: &str, s: u32, e: u32, c: &str| SlotRange { region: id(r), start: s, end: e, cell: id(c) };
    RoutingTable {
        version: 1,
        slot_count: 128,
        default_region: id("us-east"),
        regions: vec![eu, ec, us],
        cells: vec![eu1, eu2, cell("ec-1", "eu-central"), us1],
        slots: vec![
            sr("eu-west", 0, 63, "eu-1"),
            sr("eu-west", 64, 127, "eu-2"),
            sr("eu-central", 0, 127, "ec-1"),
            sr("us-east", 0, 127, "us-1"),
        ],
        migrations: vec![],
    }
}

fn key_in(t: &CompiledTable, region: &str, home: &str) -> String {
    (0..100_000)
        .map(|i| format!("user-{i}"))
        .find(|k| resolve_in(t, &id(region), k).map(|r| r.home.as_str() == home).unwrap_or(false))
        .unwrap()
}

#[test]
fn xxh3_vectors() {
    assert_eq!(xxh3(b""), 0x2d06_8005_38d3_94c2);
    assert_eq!(slot_of("", 16384), 5314);
    assert_eq!(slot_of("", 128), 66);
    assert_eq!(slot_of("anything", 0), 0);
}

#[test]
fn md5_compat_matches_python() {
    // int(md5(b"42_eu").hexdigest()[:4], 16) == 0x7276
    assert_eq!(slot_of_md5("42", "eu", 16384), 0x7276 % 16384);
    assert_eq!(slot_of_md5("42", "eu", 128), 118);
}

#[test]
fn json_and_yaml_round_trip() {
    let t = geo_table();
    let json = t.to_json().unwrap();
    assert_eq!(RoutingTable::decode(&json).unwrap(), t);
    let yaml = t.to_yaml().unwrap();
    assert_eq!(RoutingTable::decode(yaml.as_bytes()).unwrap(), t);
    assert!(matches!(RoutingTable::decode(b"  "), Err(Error::Decode(_))));
    assert!(matches!(RoutingTable::decode(b"{\"version\": 1}"), Err(Error::Decode(_))));
    t.validate().unwrap();
}

#[test]
fn yaml_defaults() {
    let yaml = b"version: 3\ndefault_region: r\nregions: [{name: r}]\ncells: [{id: a, region: r, endpoints: ['http://a:1']}]\nslots: [{region: r, start: 0, end: 16383, cell: a}]\n";
    let t = RoutingTable::from_yaml(yaml).unwrap();
    assert_eq!(t.slot_count, DEFAULT_SLOTS);
    assert_eq!(t.cells[0].weight, 100);
    assert_eq!(t.cells[0].state, CellState::Active);
    t.validate().unwrap();
}

#[test]
fn validation_errors() {
    let base = geo_table();
    let check = |f: &dyn Fn(&mut RoutingTable), want: &dyn Fn(&InvalidTable) -> bool| {
        let mut t = base.clone();
        f(&mut t);
        let e = t.validate().unwrap_err();
        assert!(want(&e), "unexpected {e:?}");
    };
    check(&|t| t.slots.retain(|s| s.cell.as_str() != "eu-2"), &|e| {
        matches!(e, InvalidTable::SlotUnassigned { slot: 64, .. })
    });
    check(&|t| t.slots[0].end = 64, &|e| matches!(e, InvalidTable::SlotTwice { slot: 64, .. }));
    check(&|t| t.slots[0].end = 500, &|e| matches!(e, InvalidTable::BadRange { .. }));
    check(&|t| t.slots[0].cell = id("nope"), &|e| matches!(e, InvalidTable::UnknownCell(_)));
    check(&|t| t.cells[2].region = id("mars"), &|e| matches!(e, InvalidTable::UnknownRegion(_)));
    check(&|t| t.default_region = id("mars"), &|e| matches!(e, InvalidTable::UnknownRegion(_)));
    check(&|t| t.cells.push(cell("eu-1", "eu-west")), &|e| matches!(e, InvalidTable::Duplicate(_)));
    check(&|t| t.cells[0].endpoints = vec!["not a url".into()], &|e| matches!(e, InvalidTable::BadEndpoint { .. }));
    check(&|t| t.cells[0].endpoints.clear(), &|e| matches!(e, InvalidTable::BadEndpoint { .. }));
    check(&|t| t.cells[0].failover = vec![id("eu-1")], &|e| matches!(e, InvalidTable::BadFailover(_)));
    check(&|t| t.slot_count = 0, &|e| matches!(e, InvalidTable::SlotCount(0)));
    check(&|t| t.cells.clear(), &|e| matches!(e, InvalidTable::Empty(_)));
    check(&|t| t.regions[1].datacenter = Some(1), &|e| matches!(e, InvalidTable::DuplicateDatacenter(1)));
    // a pinned region's failover target outside the allowed regions
    check(&|t| t.cells[1].failover = vec![id("us-1")], &|e| {
        matches!(e, InvalidTable::Compliance { cell, .. } if cell.as_str() == "us-1")
    });
    // a pinned region's slot on a cell outside
    check(&|t| t.slots[0].cell = id("us-1"), &|e| matches!(e, InvalidTable::Compliance { .. }));
    // a migration of a pinned slot out of the allowed regions
    check(
        &|t| t.migrations.push(Migration::new(id("eu-west"), 0, 3, id("eu-1"), id("us-1"))),
        &|e| matches!(e, InvalidTable::Compliance { .. }),
    );
    // a migration not starting from the owner
    check(
        &|t| t.migrations.push(Migration::new(id("eu-west"), 0, 3, id("eu-2"), id("ec-1"))),
        &|e| matches!(e, InvalidTable::BadMigration { slot: 0, .. }),
    );
}

#[test]
fn resolve_follows_state_failover_and_migration() {
    let t = geo_table().compile().unwrap();
    let k = key_in(&t, "eu-west", "eu-1");
    let r = resolve_in(&t, &id("eu-west"), &k).unwrap();
    assert_eq!((r.home.as_str(), r.target.as_str(), r.kind), ("eu-1", "eu-1", TargetKind::Home));
    assert!(r.pinned);
    assert_eq!(t.slot_state(&id("eu-west"), r.slot), Some(SlotState::Stable(&id("eu-1"))));

    // home down -> first failover target that is up
    let mut raw = geo_table();
    raw.cell_mut(&id("eu-1")).unwrap().state = CellState::Down;
    let t2 = raw.clone().compile().unwrap();
    let r = resolve_in(&t2, &id("eu-west"), &k).unwrap();
    assert_eq!((r.home.as_str(), r.target.as_str(), r.kind), ("eu-1", "eu-2", TargetKind::Failover));
    // both eu-west cells down -> the allowed eu-central cell
    raw.cell_mut(&id("eu-2")).unwrap().state = CellState::Down;
    let t3 = raw.clone().compile().unwrap();
    assert_eq!(resolve_in(&t3, &id("eu-west"), &k).unwrap().target.as_str(), "ec-1");
    // and nothing allowed left -> NoTarget (503), never a leak
    raw.cell_mut(&id("ec-1")).unwrap().state = CellState::Down;
    let t4 = raw.clone().compile().unwrap();
    assert_eq!(
        resolve_in(&t4, &id("eu-west"), &k).unwrap_err(),
        ResolveError::NoTarget { slot: slot_of(&k, 128), home: id("eu-1"), pinned: true }
    );

    // draining still serves its slots
    let mut raw = geo_table();
    raw.cell_mut(&id("eu-1")).unwrap().state = CellState::Draining;
    let t5 = raw.compile().unwrap();
    assert_eq!(resolve_in(&t5, &id("eu-west"), &k).unwrap().target.as_str(), "eu-1");

    // migrating slot -> new owner (ASK)
    let mut raw = geo_table();
    let slot = slot_of(&k, 128);
    raw.migrations.push(Migration::new(id("eu-west"), slot, slot, id("eu-1"), id("eu-2")));
    let t6 = raw.compile().unwrap();
    let r = resolve_in(&t6, &id("eu-west"), &k).unwrap();
    assert_eq!((r.home.as_str(), r.target.as_str(), r.kind), ("eu-1", "eu-2", TargetKind::Migrating));
    assert_eq!(t6.slot_state(&id("eu-west"), slot), Some(SlotState::Migrating { from: &id("eu-1"), to: &id("eu-2") }));

    assert_eq!(resolve_in(&t, &id("mars"), &k).unwrap_err(), ResolveError::UnknownRegion(id("mars")));
    assert_eq!(resolve(&t, &k).unwrap().region.as_str(), "us-east");
}

#[test]
fn runtime_failover_filter_keeps_compliance_for_unpinned_home() {
    // us-1 (unpinned region) fails over to eu-1: allowed (us data may go anywhere).
    let mut raw = geo_table();
    raw.cell_mut(&id("us-1")).unwrap().state = CellState::Down;
    let t = raw.compile().unwrap();
    assert_eq!(resolve(&t, "someone").unwrap().target.as_str(), "eu-1");
    assert!(t.allows(&id("us-east"), &id("eu-1")));
    assert!(!t.allows(&id("eu-west"), &id("us-1")));
    assert!(t.allows(&id("eu-west"), &id("ec-1")));
}

#[test]
fn store_rejects_stale_and_invalid_and_keeps_old() {
    let store = TableStore::new();
    assert!(store.load().is_none());
    let mut rx = store.subscribe();
    store.store(geo_table()).unwrap();
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().version(), 1);
    // same version
    let e = store.store(geo_table()).unwrap_err();
    assert!(matches!(e, Error::Invalid(InvalidTable::StaleVersion { current: 1, offered: 1 })));
    // invalid v2
    let mut bad = geo_table();
    bad.version = 2;
    bad.slots.pop();
    assert!(matches!(store.store(bad).unwrap_err(), Error::Invalid(InvalidTable::SlotUnassigned { .. })));
    assert_eq!(store.version(), Some(1));
    assert_eq!(store.rejected_count(), 2);
    assert!(!rx.has_changed().unwrap());
    let mut good = geo_table();
    good.version = 5;
    store.store(good).unwrap();
    assert_eq!(rx.borrow_and_update().as_ref().unwrap().version(), 5);
    assert_eq!(store.applied_count(), 2);
    assert!(store.staleness().is_some());
}

#[test]
fn failed_cell_overlay_survives_updates() {
    let store = TableStore::with_table(geo_table()).unwrap();
    let t = store.current().unwrap();
    let k = key_in(&t, "eu-west", "eu-1");
    store.set_cell_failed(&id("eu-1"), true);
    let target = |s: &TableStore| resolve_in(&s.current().unwrap(), &id("eu-west"), &k).unwrap().target.clone();
    assert_eq!(target(&store).as_str(), "eu-2");
    let mut t2 = geo_table();
    t2.version = 2;
    store.store(t2).unwrap();
    assert!(store.current().unwrap().is_failed(&id("eu-1")));
    assert_eq!(target(&store).as_str(), "eu-2");
    store.set_cell_failed(&id("eu-1"), false);
    assert_eq!(target(&store).as_str(), "eu-1");
}

#[test]
fn rtt_weight_formula() {
    assert!((rtt_weight(100.0, 0.0) - 150.0).abs() < 1e-9);
    assert!((rtt_weight(100.0, 100.0) - 100.0 * (1.0 + 0.5 * (-2.0f64).exp())).abs() < 1e-9);
    assert_eq!(rtt_weight(100.0, f64::NAN), 100.0);
    let p = WeightParams::default();
    assert_eq!(p.weight(100.0, Some(10.0), true), 0.0);
    assert_eq!(p.weight(100.0, None, false), 100.0);
    let tight = WeightParams { floor: 2.0, ..p };
    assert_eq!(tight.weight(100.0, Some(1000.0), false), 200.0);
}

#[test]
fn wrr_shares_match_weights_within_2_percent() {
    let wrr = SmoothWrr::new();
    wrr.insert("near", 100.0);
    wrr.insert("mid", 100.0);
    wrr.insert("far", 50.0);
    wrr.insert("dead", 100.0);
    // feed RTTs through the EWMA
    for _ in 0..20 {
        wrr.observe_rtt(&"near", Duration::from_millis(5));
        wrr.observe_rtt(&"mid", Duration::from_millis(40));
        wrr.observe_rtt(&"far", Duration::from_millis(150));
    }
    wrr.set_failed(&"dead", true);
    let expect: HashMap<&str, f64> = [("near", 5.0), ("mid", 40.0), ("far", 150.0)]
        .into_iter()
        .map(|(k, rtt)| (k, rtt_weight(if k == "far" { 50.0 } else { 100.0 }, rtt)))
        .collect();
    for (k, w) in &expect {
        assert!((wrr.weight(k).unwrap() - w).abs() < 0.01, "{k}: {} vs {w}", wrr.weight(k).unwrap());
    }
    let total: f64 = expect.values().sum();
    let mut counts: HashMap<&str, u32> = HashMap::new();
    for _ in 0..10_000 {
        *counts.entry(wrr.pick().unwrap()).or_default() += 1;
    }
    assert_eq!(counts.get("dead"), None);
    for (k, w) in &expect {
        let share = f64::from(counts[k]) / 10_000.0;
        let want = w / total;
        assert!((share - want).abs() <= 0.02 * want, "{k}: share {share} want {want}");
    }
    // recovery and live updates
    wrr.set_failed(&"dead", false);
    assert!((0..100).any(|_| wrr.pick() == Some("dead")));
    wrr.remove(&"dead");
    assert_eq!(wrr.len(), 3);
    let empty: SmoothWrr<&str> = SmoothWrr::new();
    assert_eq!(empty.pick(), None);
}

#[test]
fn rebalance_add_and_drain_any_cell() {
    let cells: Vec<Cell> = ["a", "b", "c"].iter().map(|c| cell(c, "eu")).collect();
    let table = RoutingTable::uniform(id("eu"), cells, 16384);
    let target: Vec<(CellId, u32)> = ["a", "b", "c", "d"].iter().map(|c| (id(c), 100)).collect();
    let plan = plan_rebalance(&table, &id("eu"), &target).unwrap();
    assert_eq!(plan.moves.len(), 4096);
    assert!((plan.moved_fraction() - 0.25).abs() < 1e-9);
    let mut next = table.clone();
    next.cells.push(cell("d", "eu"));
    let next = plan.apply(&next);
    assert_eq!(next.version, 2);
    let compiled = next.clone().compile().unwrap();
    // the migration form validates against the old table plus the new cell
    let mut asking = table.clone();
    asking.cells.push(cell("d", "eu"));
    asking.migrations = plan.migrations();
    asking.version = 2;
    asking.validate().unwrap();
    // drain b (a middle cell): only b's slots move
    let target: Vec<(CellId, u32)> = ["a", "c", "d"].iter().map(|c| (id(c), 100)).collect();
    let drain = plan_rebalance(&next, &id("eu"), &target).unwrap();
    assert!(drain.moves.iter().all(|m| m.from.as_str() == "b"));
    let b_held = (0..16384).filter(|&s| compiled.slot_state(&id("eu"), s) == Some(SlotState::Stable(&id("b")))).count();
    assert_eq!(drain.moves.len(), b_held);
}

// ---------- proptest laws ----------

/// The compliance law is not vacuous: the generator yields valid tables with
/// pinned regions, and invalid ones that the validator catches.
#[test]
fn generator_covers_pinned_valid_tables() {
    use proptest::strategy::ValueTree;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strat = arb_table();
    let (mut pinned_valid, mut invalid) = (0, 0);
    for _ in 0..300 {
        let t = strat.new_tree(&mut runner).unwrap().current();
        match t.validate() {
            Ok(()) if t.regions.iter().any(Region::is_pinned) => pinned_valid += 1,
            Ok(()) => {}
            Err(_) => invalid += 1,
        }
    }
    assert!(pinned_valid >= 20, "only {pinned_valid} pinned valid tables");
    assert!(invalid >= 20, "only {invalid} invalid tables");
}

fn arb_table() -> impl Strategy<Value = RoutingTable> {
    // 1-3 regions, 1-4 cells each, random contiguous splits, random pins and failovers.
    (1usize..=3, prop::collection::vec(1usize..=4, 3), prop::collection::vec(any::<u8>(), 64), prop::collection::vec(any::<bool>(), 3))
        .prop_map(|(nr, per, bytes, pins)| {
            let n = 64u32;
            let mut b = bytes.into_iter().cycle();
            let regions: Vec<Region> = (0..nr)
                .map(|i| {
                    let mut r = Region::new(id(&format!("r{i}")));
                    if pins[i] {
                        r.compliance = vec!["gdpr".into()];
                        if nr > 1 && b.next().unwrap().is_multiple_of(2) {
                            r.allowed_regions = vec![id(&format!("r{}", (i + 1) % nr))];
                        }
                    }
                    r
                })
                .collect();
            let mut cells = Vec::new();
            for (i, k) in per.iter().take(nr).enumerate() {
                for j in 0..*k {
                    cells.push(cell(&format!("c{i}-{j}"), &format!("r{i}")));
                }
            }
            let nc = cells.len();
            // Mostly same-region choices, so pinned regions often validate.
            let region_cells: Vec<Vec<usize>> =
                (0..nr).map(|r| (0..nc).filter(|&c| cells[c].region == id(&format!("r{r}"))).collect()).collect();
            let pick = |r: usize, b: &mut dyn Iterator<Item = u8>| -> usize {
                let x = b.next().unwrap() as usize;
                if x.is_multiple_of(4) { x / 4 % nc } else { region_cells[r][x / 4 % region_cells[r].len()] }
            };
            for c in 0..nc {
                let r: usize = cells[c].region.as_str()[1..].parse().unwrap();
                let f = pick(r, &mut b);
                if f != c {
                    cells[c].failover = vec![cells[f].id.clone()];
                }
            }
            let mut slots = Vec::new();
            for r in 0..nr {
                let mut start = 0u32;
                while start < n {
                    let len = 1 + u32::from(b.next().unwrap()) % 32;
                    let end = (start + len - 1).min(n - 1);
                    let owner = cells[pick(r, &mut b)].id.clone();
                    slots.push(SlotRange { region: id(&format!("r{r}")), start, end, cell: owner });
                    start = end + 1;
                }
            }
            let states = [CellState::Active, CellState::Active, CellState::Draining, CellState::Down];
            for c in cells.iter_mut() {
                c.state = states[b.next().unwrap() as usize % 4];
            }
            RoutingTable { version: 1, slot_count: n, default_region: id("r0"), regions, cells, slots, migrations: vec![] }
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Any table that validates never routes a pinned region's key outside its allowed regions.
    #[test]
    fn compliance_never_violated(t in arb_table(), keys in prop::collection::vec("[a-z0-9]{1,12}", 20)) {
        if let Ok(c) = t.clone().compile() {
            for r in &t.regions {
                for k in &keys {
                    match resolve_in(&c, &r.name, k) {
                        Ok(res) => {
                            let cell_region = &c.cell(res.target).unwrap().region;
                            if r.is_pinned() {
                                prop_assert!(cell_region == &r.name || r.allowed_regions.contains(cell_region));
                            }
                            prop_assert!(c.cell(res.target).unwrap().state != CellState::Down);
                        }
                        Err(ResolveError::NoTarget { .. }) => {}
                        Err(e) => prop_assert!(false, "unexpected {e:?}"),
                    }
                }
            }
        }
    }

    /// A key's slot never changes across versions, and its home changes only
    /// when its slot moved.
    #[test]
    fn slot_stable_across_versions(keys in prop::collection::vec("[a-zA-Z0-9_-]{1,24}", 50), add in 1usize..4) {
        let cells: Vec<Cell> = (0..3).map(|i| cell(&format!("c{i}"), "eu")).collect();
        let v1 = RoutingTable::uniform(id("eu"), cells, 256);
        let mut target: Vec<(CellId, u32)> = v1.cells.iter().map(|c| (c.id.clone(), 100)).collect();
        let mut v2 = v1.clone();
        for i in 0..add {
            let c = cell(&format!("n{i}"), "eu");
            target.push((c.id.clone(), 100));
            v2.cells.push(c);
        }
        let plan = plan_rebalance(&v1, &id("eu"), &target).unwrap();
        let v2 = plan.apply(&v2);
        let (c1, c2) = (v1.compile().unwrap(), v2.compile().unwrap());
        let moved: std::collections::HashSet<u32> = plan.moves.iter().map(|m| m.slot).collect();
        for k in &keys {
            let (a, b) = (resolve(&c1, k).unwrap(), resolve(&c2, k).unwrap());
            prop_assert_eq!(a.slot, b.slot);
            prop_assert_eq!(a.slot, slot_of(k, 256));
            if a.home != b.home {
                prop_assert!(moved.contains(&a.slot));
            }
        }
    }

    /// Rebalancing moves the minimum: Σ max(0, held − quota), every moved slot
    /// leaves a cell above its quota, and the result matches the quotas.
    #[test]
    fn rebalance_moves_the_minimum(weights in prop::collection::vec(1u32..200, 1..6), new_weights in prop::collection::vec(0u32..200, 1..7)) {
        let n = 512u32;
        let cells: Vec<Cell> = (0..weights.len()).map(|i| { let mut c = cell(&format!("c{i}"), "eu"); c.weight = weights[i]; c }).collect();
        let v1 = RoutingTable::uniform(id("eu"), cells, n);
        let target: Vec<(CellId, u32)> = new_weights.iter().enumerate().map(|(i, w)| (id(&format!("c{i}")), *w)).collect();
        let total: u64 = target.iter().map(|(_, w)| u64::from(*w)).sum();
        prop_assume!(total > 0);
        let plan = plan_rebalance(&v1, &id("eu"), &target).unwrap();
        let mut v2 = v1.clone();
        for (c, _) in &target {
            if v2.cell(c).is_none() { v2.cells.push(cell(c.as_str(), "eu")); }
        }
        let after = plan.apply(&v2);
        let held = |t: &RoutingTable, c: &CellId| -> u64 { t.slots.iter().filter(|s| &s.cell == c).map(|s| u64::from(s.end - s.start + 1)).sum() };
        // lower bound: every cell must end at its quota (floor or ceil of its share)
        let mut lower = 0u64;
        for c in v2.cells.iter() {
            let w = target.iter().find(|(t, _)| t == &c.id).map(|(_, w)| u64::from(*w)).unwrap_or(0);
            let share_floor = u64::from(n) * w / total;
            let share_ceil = (u64::from(n) * w).div_ceil(total);
            let h_after = held(&after, &c.id);
            prop_assert!(h_after >= share_floor && h_after <= share_ceil, "cell {} holds {} not in [{}, {}]", c.id, h_after, share_floor, share_ceil);
            lower += held(&v1, &c.id).saturating_sub(share_ceil);
        }
        prop_assert!(plan.moves.len() as u64 >= lower);
        let moved_out: u64 = v2.cells.iter().map(|c| held(&v1, &c.id).saturating_sub(held(&after, &c.id))).sum();
        prop_assert_eq!(plan.moves.len() as u64, moved_out, "a slot moved more than needed");
        after.validate().unwrap();
    }
}

fn shares<K: std::hash::Hash + Eq>(picks: impl Iterator<Item = K>) -> HashMap<K, u32> {
    let mut m = HashMap::new();
    for k in picks {
        *m.entry(k).or_default() += 1;
    }
    m
}

#[test]
fn balancer_endpoint_shares_follow_rtt_and_skip_failed() {
    let mut a = cell("a", "eu");
    a.endpoints = ["http://e1:80", "http://e2:80", "http://e3:80", "http://e4:80"].map(String::from).to_vec();
    let mut t = RoutingTable::uniform(id("eu"), vec![a, cell("b", "eu")], 128);
    let table = t.clone().compile().unwrap();
    let b = Balancer::new();
    // failed before the first pick (health checks may report first)
    b.set_endpoint_failed(&id("a"), "http://e4:80", true);
    assert_eq!(b.endpoint_weight(&id("a"), "http://e4:80"), Some(0.0));
    b.pick_endpoint(&table, &id("a")).unwrap();
    let rtts = [("http://e1:80", 2u64), ("http://e2:80", 30), ("http://e3:80", 120)];
    for _ in 0..10 {
        for (e, ms) in rtts {
            b.observe_endpoint_rtt(&id("a"), e, Duration::from_millis(ms));
        }
    }
    let want: HashMap<&str, f64> = rtts.iter().map(|&(e, ms)| (e, rtt_weight(100.0, ms as f64))).collect();
    for (e, w) in &want {
        assert!((b.endpoint_weight(&id("a"), e).unwrap() - w).abs() < 0.01);
        assert!((b.endpoint_rtt_ms(&id("a"), e).unwrap() - rtts.iter().find(|r| r.0 == *e).unwrap().1 as f64).abs() < 1e-6);
    }
    let counts = shares((0..10_000).map(|_| b.pick_endpoint(&table, &id("a")).unwrap().to_string()));
    assert_eq!(counts.get("http://e4:80"), None, "a failed endpoint got requests");
    let total: f64 = want.values().sum();
    for (e, w) in &want {
        let share = f64::from(counts[*e]) / 10_000.0;
        assert!((share - w / total).abs() <= 0.02 * (w / total), "{e}: share {share} want {}", w / total);
    }
    // A new table version keeps the failed flag and the RTTs, and drops endpoints
    // no longer listed.
    t.version = 2;
    t.cell_mut(&id("a")).unwrap().endpoints.retain(|e| e != "http://e3:80");
    let table2 = t.compile().unwrap();
    let counts = shares((0..1000).map(|_| b.pick_endpoint(&table2, &id("a")).unwrap().to_string()));
    assert_eq!(counts.keys().map(String::as_str).collect::<std::collections::BTreeSet<_>>(), ["http://e1:80", "http://e2:80"].into());
    assert_eq!(b.endpoint_weight(&id("a"), "http://e3:80"), None);
    // Every endpoint failed: nothing to pick.
    for e in ["http://e1:80", "http://e2:80", "http://e4:80"] {
        b.set_endpoint_failed(&id("a"), e, true);
    }
    assert_eq!(b.pick_endpoint(&table2, &id("a")), None);
    b.set_endpoint_failed(&id("a"), "http://e2:80", false);
    assert_eq!(b.pick_endpoint(&table2, &id("a")).as_deref(), Some("http://e2:80"));
    assert_eq!(b.pick_endpoint(&table2, &id("nope")), None);
}

#[test]
fn balancer_cells_for_unkeyed_traffic() {
    let mut cells: Vec<Cell> = ["a", "b", "c", "d"].iter().map(|c| cell(c, "eu")).collect();
    cells[1].weight = 300;
    cells[2].state = CellState::Draining;
    let mut t = RoutingTable::uniform(id("eu"), cells, 128);
    t.regions.push(Region::new(id("us")));
    t.cells.push(cell("u", "us"));
    t.slots.push(SlotRange { region: id("us"), start: 0, end: 127, cell: id("u") });
    let store = TableStore::with_table(t).unwrap();
    store.set_cell_failed(&id("d"), true);
    let table = store.current().unwrap();
    let bal = Balancer::new();
    let eu = Some(&id("eu"));
    bal.pick_cell(&table, eu).unwrap();
    bal.pick_cell(&table, None).unwrap();
    for _ in 0..10 {
        bal.observe_cell_rtt(&id("a"), Duration::from_millis(80));
        bal.observe_cell_rtt(&id("b"), Duration::from_millis(5));
        bal.observe_cell_rtt(&id("u"), Duration::from_millis(150));
    }
    let (wa, wb) = (rtt_weight(100.0, 80.0), rtt_weight(300.0, 5.0));
    assert!((bal.cell_weight(eu, &id("a")).unwrap() - wa).abs() < 0.01);
    assert!((bal.cell_weight(eu, &id("b")).unwrap() - wb).abs() < 0.01);
    assert_eq!(bal.cell_weight(eu, &id("c")), Some(0.0), "draining cells take no unkeyed traffic");
    assert_eq!(bal.cell_weight(eu, &id("d")), Some(0.0), "failed cells take no unkeyed traffic");
    let counts = shares((0..10_000).map(|_| bal.pick_cell(&table, eu).unwrap().as_str().to_string()));
    assert_eq!(counts.len(), 2, "{counts:?}");
    for (c, w) in [("a", wa), ("b", wb)] {
        let share = f64::from(counts[c]) / 10_000.0;
        let want = w / (wa + wb);
        assert!((share - want).abs() <= 0.02 * want, "{c}: share {share} want {want}");
    }
    // Global scope includes the other region; recovery of d is seen without a
    // new table version (health generation).
    let global = shares((0..1000).map(|_| bal.pick_cell(&table, None).unwrap().as_str().to_string()));
    assert!(global.contains_key("u") && !global.contains_key("c") && !global.contains_key("d"), "{global:?}");
    store.set_cell_failed(&id("d"), false);
    assert!((0..100).any(|_| bal.pick_cell(&table, eu).unwrap().as_str() == "d"));
}

#[test]
fn precomputed_routes_match_slot_of_for_any_slot_count() {
    for n in [7u32, 100, 128, 1000, 16384] {
        let t = RoutingTable::uniform(id("eu"), vec![cell("a", "eu"), cell("b", "eu"), cell("c", "eu")], n).compile().unwrap();
        for i in 0..500 {
            let k = format!("k{i}");
            let r = resolve(&t, &k).unwrap();
            assert_eq!(r.slot, slot_of(&k, n));
            assert_eq!(Some(r.home), match t.slot_state(&id("eu"), r.slot).unwrap() {
                SlotState::Stable(c) => Some(c),
                SlotState::Migrating { from, .. } => Some(from),
            });
        }
    }
}

#[test]
fn table_cache_follows_swaps() {
    let mut t = RoutingTable::uniform(id("eu"), vec![cell("a", "eu")], 128);
    let store = TableStore::new();
    let mut cache = store.cache();
    assert!(cache.load().is_none());
    store.store(t.clone()).unwrap();
    assert_eq!(cache.load().unwrap().version(), 1);
    let held = std::sync::Arc::clone(cache.load().unwrap());
    t.version = 5;
    store.store(t).unwrap();
    assert_eq!(cache.load().unwrap().version(), 5);
    assert_eq!(held.version(), 1);
    assert_eq!(cache.clone().load().unwrap().version(), 5);
}
