//! `demo kafka-mock`: an in-memory Kafka cluster (librdkafka's mock cluster)
//! in a process of its own, for trying the roles on one machine without a
//! broker. It prints `KAFKA_BOOTSTRAP=HOST:PORT` as the first line of
//! stdout and serves until killed. Loopback only, nothing persisted: a real
//! deployment points `--kafka` at real brokers.

use std::time::Duration;

use crate::error::DemoError;

/// Arguments of `demo kafka-mock`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct KafkaMockArgs {
    /// The replication topic to create.
    #[arg(long, default_value = "demo-crdt")]
    pub(crate) topic: String,
    /// Its partitions.
    #[arg(long, default_value_t = 3)]
    pub(crate) partitions: i32,
    /// Exit when the parent process does.
    #[arg(long)]
    pub(crate) exit_with_parent: bool,
}

/// Runs the mock cluster until the process ends (on this thread: the
/// cluster is not `Send`).
pub(crate) fn run(args: &KafkaMockArgs) -> Result<(), DemoError> {
    use std::io::Write;
    let mock = rdkafka::mocking::MockCluster::new(1)?;
    mock.create_topic(&args.topic, args.partitions, 1)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "KAFKA_BOOTSTRAP={}", mock.bootstrap_servers())?;
    out.flush()?;
    drop(out);
    let parent = std::os::unix::process::parent_id();
    loop {
        std::thread::sleep(Duration::from_millis(250));
        if args.exit_with_parent && std::os::unix::process::parent_id() != parent {
            return Ok(());
        }
    }
}
