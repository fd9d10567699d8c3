//! The live console in a real browser: headless Chromium driven over
//! WebDriver (chromedriver, `fantoccini`) opens `demo --ui`, kills a cell
//! with its button and watches the traffic move to the failover cell and the
//! drain row appear, restarts it and watches the failback, then stops the run
//! from the page. With `DEMO_SCREENSHOT=path.png` it saves a screenshot of
//! the console after the failback.
//!
//! Chromium and chromedriver come from Debian (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `CHROMIUM` and `CHROMEDRIVER` override the
//! paths). Missing, they fail this test: `scripts/test` installs them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[allow(dead_code)] // each test binary uses part of it
mod support;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};

/// How long any one thing the test waits for may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// A child process killed when the test ends, however it ends.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn tool(env: &str, default: &str, package: &str) -> PathBuf {
    let path = std::env::var_os(env).map_or_else(|| PathBuf::from(default), PathBuf::from);
    assert!(
        path.is_file(),
        "{} not found: this test drives a real headless browser; install it with \
         `apt-get install -y {package}` (scripts/test does) or set {env}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// chromedriver on a free loopback port, once it accepts connections.
fn start_chromedriver(path: &PathBuf) -> (Reaped, String) {
    let port = free_port();
    let child = Command::new(path)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let guard = Reaped(child);
    let deadline = Instant::now() + PATIENCE;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "chromedriver did not listen on port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    (guard, format!("http://127.0.0.1:{port}"))
}

/// `demo --ui` (no duration: the test stops it from the page); its stdout
/// lines arrive on the returned channel, the first being the console's URL.
fn start_demo() -> (Reaped, mpsc::Receiver<String>, String) {
    let mut child = support::demo(&["--ui", "--rps", "90", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the demo binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let guard = Reaped(child);
    let rx = support::lines(stdout);
    let first = rx.recv_timeout(PATIENCE).expect("the demo prints the console URL first");
    let url = first.strip_prefix("console: ").unwrap_or_else(|| panic!("first line {first:?} is not the console URL"));
    assert!(url.starts_with("http://127.0.0.1:"), "the console listens on loopback: {url}");
    (guard, rx, url.to_string())
}

async fn browser(webdriver: &str, chromium: &PathBuf, profile: &std::path::Path) -> Client {
    let args = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,1500",
    ]
    .map(String::from)
    .into_iter()
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect::<Vec<_>>();
    let mut caps = serde_json::Map::new();
    caps.insert("browserName".into(), "chrome".into());
    caps.insert("goog:chromeOptions".into(), serde_json::json!({ "binary": chromium, "args": args }));
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(webdriver)
        .await
        .expect("a browser session")
}

/// The text of the element `id` as the page shows it now (read in one
/// script: the page rewrites parts of itself twice a second).
async fn text_of(page: &Client, id: &str) -> String {
    let got = page
        .execute("const e = document.getElementById(arguments[0]); return e ? e.textContent : null;", vec![id.into()])
        .await
        .unwrap();
    got.as_str().unwrap_or_else(|| panic!("no element #{id}")).to_string()
}

/// The requests/s a cell served in the last complete second, as its card shows.
async fn rate(page: &Client, cell: &str) -> u64 {
    let text = text_of(page, &format!("rate-{cell}")).await;
    text.trim().parse().unwrap_or_else(|_| panic!("rate of {cell}: {text:?}"))
}

/// Whether the audit log shows an applied `action` row for `cell`.
async fn audit_row(page: &Client, action: &str, cell: &str) -> bool {
    let css = format!("#audit tr[data-action='{action}'][data-cell='{cell}'][data-status='applied']");
    let found = page.execute("return document.querySelectorAll(arguments[0]).length;", vec![css.into()]).await.unwrap();
    found.as_u64().unwrap_or(0) > 0
}

/// Polls `check` (every 200 ms) until it holds; fails with `what` after [`PATIENCE`].
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let deadline = Instant::now() + PATIENCE;
        loop {
            if $check {
                break;
            }
            assert!(Instant::now() < deadline, "never saw: {}", $what);
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }};
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_kills_and_restarts_a_cell_and_shows_the_traffic_move() {
    let chromium = tool("CHROMIUM", "/usr/bin/chromium", "chromium");
    let chromedriver = tool("CHROMEDRIVER", "/usr/bin/chromedriver", "chromium-driver");
    let (_driver, webdriver) = start_chromedriver(&chromedriver);
    let (mut demo, lines, url) = start_demo();
    let profile = tempfile::tempdir().unwrap();
    let page = browser(&webdriver, &chromium, profile.path()).await;
    page.goto(&url).await.unwrap();

    // the run is live: every cell serves its own users
    page.wait().at_most(PATIENCE).for_element(Locator::Id("kill-beijing")).await.expect("the cells' cards");
    eventually!("every cell serving", {
        rate(&page, "beijing").await > 0 && rate(&page, "shanghai").await > 0 && rate(&page, "shenzhen").await > 0
    });
    let before = rate(&page, "shanghai").await;

    // kill beijing: its traffic falls to zero, its failover target (shanghai) takes its users
    page.find(Locator::Id("kill-beijing")).await.unwrap().click().await.unwrap();
    eventually!("the drain row in the audit log", audit_row(&page, "drain", "beijing").await);
    // shanghai now serves two cells' users: above its own rate before the
    // kill, and well above shenzhen, which serves one cell's
    eventually!(format!("beijing at zero, shanghai above {before} req/s and a third above shenzhen"), {
        let (b, sh, sz) = (rate(&page, "beijing").await, rate(&page, "shanghai").await, rate(&page, "shenzhen").await);
        b == 0 && sh > before && 3 * sh > 4 * sz
    });
    assert_eq!(text_of(&page, "state-beijing").await, "down");
    assert!(text_of(&page, "slots-beijing").await.starts_with("0 "), "beijing's slots moved");

    // restart it: failback
    page.find(Locator::Id("restart-beijing")).await.unwrap().click().await.unwrap();
    eventually!("the failback row in the audit log", audit_row(&page, "failback", "beijing").await);
    eventually!("beijing serving again", rate(&page, "beijing").await > 0);
    assert_eq!(text_of(&page, "state-beijing").await, "active");
    // its replication lag is on show (it converges once the load stops: checked below)
    eventually!("beijing's replication lag", text_of(&page, "behind-beijing").await.parse::<u64>().is_ok());

    if let Some(path) = std::env::var_os("DEMO_SCREENSHOT") {
        // a few more seconds of traffic, so the chart shows the way back
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(&path, page.screenshot().await.unwrap()).unwrap();
    }

    // stop from the page: the demo reports and exits
    page.find(Locator::Id("stop")).await.unwrap().click().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = demo.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "the demo did not exit after stop");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    page.close().await.unwrap();
    assert!(status.success(), "demo exited with {status}");
    let last = lines.iter().last().expect("a JSON line");
    let r: serde_json::Value = serde_json::from_str(&last).expect("the last line is JSON");
    assert_eq!(r["killed_cell"], "beijing", "{r}");
    // beijing's rows (a starved host can make the probers drain another cell for a moment too)
    let rows = r["audit_rows"].as_array().unwrap().iter().filter(|a| a["cell"] == "beijing");
    let actions: Vec<&str> = rows.map(|a| a["action"].as_str().unwrap()).collect();
    // the kill's cycle: the drain, the failback ramp's steps, the failback
    let failback = actions.iter().position(|a| *a == "failback").unwrap_or_else(|| panic!("no failback row: {r}"));
    let (cycle, after) = actions.split_at(failback + 1);
    assert_eq!(cycle.first(), Some(&"drain"), "{r}");
    assert!(cycle.iter().filter(|a| **a == "ramp").count() >= 2, "{r}");
    // a freshly restarted cell may relapse on a loaded host: a later cycle
    // starts with its own drain (the page's stop may cut it short)
    assert!(after.is_empty() || after[0] == "drain", "after the failback: {after:?} in {r}");
    assert_eq!(r["lost_writes"], 0, "{r}");
    assert_eq!(r["converged"], true, "{r}");
}
