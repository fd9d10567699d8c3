//! Process and thread CPU times from `/proc` (Linux).
#![allow(dead_code)]

use std::time::Duration;

/// User and system CPU time in a `/proc/.../stat` file (`/proc/<pid>/stat`,
/// `/proc/thread-self/stat`): clock ticks of 10 ms (USER_HZ is 100 on Linux).
pub(crate) fn user_system(path: &str) -> (Duration, Duration) {
    let stat = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{path}: {e} (Linux /proc)"));
    let rest = stat.rsplit_once(')').map(|(_, r)| r).expect("stat: command name");
    // After the command name: state is the first field, utime the 12th, stime the 13th.
    let ticks: Vec<u64> = rest.split_whitespace().skip(11).take(2).map(|v| v.parse().expect("stat: ticks")).collect();
    let tick = Duration::from_millis(10);
    (tick * ticks[0] as u32, tick * ticks[1] as u32)
}
