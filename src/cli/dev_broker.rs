//! `keyflow dev-broker`: librdkafka's in-process mock cluster, on real loopback ports, so
//! `keyflow run` and other Kafka clients can be pointed at it during development.

use std::process::ExitCode;

use rdkafka::mocking::MockCluster;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Number of brokers.
    #[arg(long, default_value_t = 1)]
    brokers: i32,
    /// Topics to create, `name:partitions` (the mock's admin API cannot create topics).
    #[arg(long, value_delimiter = ',', default_value = "events:4,statuses:4")]
    topics: Vec<String>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let cluster = MockCluster::new(args.brokers)?;
    for t in &args.topics {
        let (name, n) = t.split_once(':').unwrap_or((t, "1"));
        cluster.create_topic(name, n.parse()?, 1)?;
    }
    println!("bootstrap.servers = \"{}\"", cluster.bootstrap_servers());
    println!("topics: {}", args.topics.join(", "));
    println!("Internal topics are created by `keyflow run` only on real Kafka: pre-create them here with --topics");
    println!("(e.g. <application.id>-documents-changelog:4) and set topics.provision = false. Ctrl-C stops the broker.");
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(tokio::signal::ctrl_c())?;
    Ok(ExitCode::SUCCESS)
}
