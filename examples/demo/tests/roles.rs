//! Every role started by hand as its own process, the way the README's
//! "Deploying across hosts" walk-through does it (here all on loopback, with
//! `demo kafka-mock` for the broker): keys, a controller, three cells, two
//! probers and a gateway. Users' requests go through the gateway; one cell
//! process is killed; the controller drains it (audit row, table version)
//! and its users' traffic moves to its failover cell.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

const CELLS: [&str; 3] = ["beijing", "shanghai", "shenzhen"];

/// A role process, killed when dropped; its stderr in `<dir>/<name>.log`.
struct Role {
    name: String,
    child: Child,
    log: std::path::PathBuf,
}

impl Role {
    fn start(dir: &Path, name: &str, args: &[&str]) -> Role {
        let log = dir.join(format!("{name}.log"));
        let child = support::demo(args)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("{name} does not start: {e}"));
        Role { name: name.into(), child, log }
    }

    /// Fails the test if the process has exited.
    fn alive(&mut self) {
        if let Some(status) = self.child.try_wait().unwrap() {
            panic!("{} exited ({status}): {}", self.name, std::fs::read_to_string(&self.log).unwrap_or_default());
        }
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The output of `demo <args>`, which must succeed.
fn demo_out(args: &[&str]) -> String {
    let out = support::demo(args).output().unwrap();
    assert!(out.status.success(), "demo {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// Polls `check` every 100 ms for `within`, keeping `roles` alive; its first `Some`.
fn wait<T>(what: &str, within: Duration, roles: &mut [&mut Role], mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = check() {
            return v;
        }
        for r in roles.iter_mut() {
            r.alive();
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn roles_started_by_hand_fail_a_killed_cell_over() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let path = |p: &str| dir.join(p).display().to_string();
    let run_id = format!("roles{}", std::process::id());
    let topic = format!("demo-crdt-{run_id}");

    // the deployment's keys, made once and copied to the hosts
    demo_out(&["keys", "--dir", &path("")]);
    for f in ["hop.key", "idp.key", "jwks.json"] {
        assert!(dir.join(f).exists(), "demo keys wrote no {f}");
    }

    // a broker: the in-memory one (a deployment points --kafka at real brokers)
    let mut kafka = support::demo(&["kafka-mock", "--topic", &topic]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(kafka.stdout.take().unwrap()).read_line(&mut first).unwrap();
    let bootstrap = first.trim().strip_prefix("KAFKA_BOOTSTRAP=").expect("kafka-mock prints its bootstrap").to_string();
    let _kafka = Role { name: "kafka-mock".into(), child: kafka, log: dir.join("none") };

    // addresses: the controller, the gateway, one instance port per cell
    let ctl = format!("http://127.0.0.1:{}", free_port());
    let gw = format!("http://127.0.0.1:{}", free_port());
    let ports: Vec<u16> = CELLS.iter().map(|_| free_port()).collect();
    let table_url = format!("{ctl}/table");

    // the controller host
    let endpoints: Vec<String> = CELLS.iter().zip(&ports).map(|(c, p)| format!("{c}=http://127.0.0.1:{p}")).collect();
    let mut args = vec!["controller", "--run-id", &run_id, "--listen", &ctl[7..], "--dir", dir.to_str().unwrap()];
    let router = format!("{gw}/admin/status");
    args.extend(["--router-status", &router]);
    for e in &endpoints {
        args.extend(["--endpoints", e]);
    }
    let mut controller = Role::start(dir, "controller", &args);
    wait("the controller's table", Duration::from_secs(60), &mut [&mut controller], || support::get_json(&ctl, "/table"));

    // one host per cell
    let mut cells: Vec<Role> = Vec::new();
    for (cell, port) in CELLS.iter().zip(&ports) {
        let (cell_dir, port) = (path(cell), port.to_string());
        let args = [
            "cell", "--id", cell, "--run-id", &run_id, "--dir", &cell_dir, "--ports", &port, "--kafka", &bootstrap, "--topic", &topic,
            "--hop-key-file", &path("hop.key"), "--table-url", &table_url,
        ];
        cells.push(Role::start(dir, cell, &args));
    }
    for (cell, port) in CELLS.iter().zip(&ports) {
        let url = format!("http://127.0.0.1:{port}");
        let mut alive: Vec<&mut Role> = cells.iter_mut().collect();
        wait(&format!("cell {cell}"), Duration::from_secs(60), &mut alive, || support::get_json(&url, "/admin/status"));
    }

    // the probers and the gateway
    let mut probers: Vec<Role> = ["prober-0", "prober-1"]
        .iter()
        .map(|name| Role::start(dir, name, &["prober", "--run-id", &run_id, "--name", name, "--controllers", &ctl, "--table-url", &table_url]))
        .collect();
    let gw_args = [
        "gateway", "--run-id", &run_id, "--listen", &gw[7..], "--controllers", &ctl, "--table-url", &table_url, "--hop-key-file",
        &path("hop.key"), "--jwks-file", &path("jwks.json"),
    ];
    let mut gateway = Role::start(dir, "gateway", &gw_args);
    wait("the gateway", Duration::from_secs(60), &mut [&mut gateway], || support::get_json(&gw, "/admin/status"));
    // the controller decides once every prober has seen every cell healthy
    {
        let mut alive: Vec<&mut Role> = probers.iter_mut().chain([&mut controller]).collect();
        let engine = || support::get_json(&ctl, "/admin/status").filter(|s| s["engine"] == true);
        let status = wait("the controller's engine", Duration::from_secs(60), &mut alive, engine);
        assert_eq!(status["probers"], serde_json::json!(["prober-0", "prober-1"]), "{status}");
        assert_eq!(status["table_version"], 1, "{status}");
    }

    // users, with their tokens from the identity provider
    let token = |user: &str, region: &str| {
        demo_out(&["token", "--idp-key", &path("idp.key"), "--user", user, "--region", region]).trim().to_string()
    };
    let users = [("beijing-user-1", "beijing"), ("shanghai-user-1", "shanghai")];
    let tokens: Vec<String> = users.iter().map(|(u, r)| token(u, r)).collect();
    let like = |i: usize| {
        let bearer = format!("Bearer {}", tokens[i]);
        let hint = format!("{};src=gps", users[i].1);
        let a = support::http(&gw, "POST", "/posts/p1/like", &[("authorization", &bearer), ("x-region-hint", &hint)]);
        (a.status, a.header("x-served-by").map(String::from), a.body)
    };
    for (i, (_, home)) in users.iter().enumerate() {
        let (status, served, body) = like(i);
        assert_eq!(status, 200, "{body}");
        assert_eq!(served.as_deref(), Some(*home), "a user is served by its home cell");
        assert!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["id"].is_string(), "a write is acknowledged with its id: {body}");
    }
    let (status, _, _) = like_without_token(&gw);
    assert_eq!(status, 401, "the gateway serves verified users only");

    // kill beijing's process: the controller drains it, its users move to shanghai
    let beijing = cells.remove(0);
    drop(beijing);
    let killed = Instant::now();
    let served = wait("beijing's users served elsewhere", Duration::from_secs(20), &mut [&mut controller, &mut gateway], || {
        let (status, served, _) = like(0);
        (status == 200 && served.as_deref() != Some("beijing")).then_some(served)
    });
    assert_eq!(served.as_deref(), Some("shanghai"), "beijing's failover target serves its users");
    eprintln!("beijing's users served by shanghai {:?} after the kill", killed.elapsed());
    // the gateway's retry on the failover cell serves them before the table
    // switches; the controller's drain follows as a new table version
    let table = wait("the drain in the table", Duration::from_secs(20), &mut [&mut controller, &mut gateway], || {
        let table = support::get_json(&ctl, "/table")?;
        let state = table["cells"].as_array()?.iter().find(|c| c["id"] == "beijing")?["state"].clone();
        (state == "down").then_some(table)
    });
    assert!(table["version"].as_u64().unwrap() >= 2, "the drain is a new table version: {table}");
    let audit = wait("the drain's audit row applied", Duration::from_secs(10), &mut [&mut controller], || {
        let rows = support::get_json(&ctl, "/audit")?;
        let drain = rows.as_array()?.iter().find(|r| r["flow"] == "beijing" && r["to"] == "state=down")?.clone();
        (drain["status"] == "applied").then_some(drain)
    });
    assert_eq!(audit["version_after"], table["version"], "{audit}");
    assert_eq!(audit["actor"], "controller-0", "{audit}");
    assert!(support::get_json(&ctl, "/admin/status").unwrap()["leader_term"].as_u64().is_some_and(|t| t >= 1), "the controller leads");
    // the gateway and the live cells run the drained table (the switch waited for them)
    assert_eq!(support::get_json(&gw, "/admin/status").unwrap()["table_version"], table["version"]);
    for port in &ports[1..] {
        assert_eq!(support::get_json(&format!("http://127.0.0.1:{port}"), "/admin/status").unwrap()["table_version"], table["version"]);
    }
    // the other region's users never moved
    let (status, served, _) = like(1);
    assert_eq!((status, served.as_deref()), (200, Some("shanghai")));
}

/// A like with no token at all.
fn like_without_token(gw: &str) -> (u16, Option<String>, String) {
    let a = support::http(gw, "POST", "/posts/p1/like", &[("x-user-id", "beijing-user-1")]);
    (a.status, a.header("x-served-by").map(String::from), a.body)
}
