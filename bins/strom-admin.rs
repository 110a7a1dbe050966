//! `strom-admin`: topic administration against a Strom cluster (create, list, describe,
//! delete) and a look at consumer groups (list, describe with committed offsets and lag).
//! Exits non-zero with a one-line reason when the cluster refuses an operation.

mod admin_log;
mod cli;

use std::collections::{BTreeMap, HashMap};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use strom_client::proto::v1::{
    BrokerInfo, DescribeClusterRequest, DescribeGroupsRequest, FindCoordinatorRequest,
    GroupDescription, ListGroupsRequest, OffsetFetchRequest, TopicDescription,
};
use strom_client::{Client, ClientConfig, ClientError, ErrorCode, OffsetSpec, check_code};
use strom_coordinator::consumer_protocol::Assignment;
use strom_format::PartitionId;

/// `println!` that ends the program quietly when stdout is closed (`strom-admin ... | head`)
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
            eprintln!("error: writing to stdout: {e}");
            std::process::exit(1);
        }
    }};
}

/// Administers a Strom cluster.
#[derive(Debug, Parser)]
#[command(name = "strom-admin", version, about)]
struct Args {
    /// host:port of one or more brokers, comma-separated.
    #[arg(long, default_value = "127.0.0.1:9095", value_name = "ADDR", global = true)]
    bootstrap: String,
    /// Deadline of each request to the cluster, in milliseconds.
    #[arg(long, default_value_t = 30_000, value_name = "MS", global = true)]
    timeout_ms: u64,
    /// Output of describe and list commands: `text` for people, `json` for scripts.
    #[arg(long, value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How describe and list commands print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Output {
    Text,
    Json,
}

/// Prints `value` as one line of JSON.
fn print_json(value: &serde_json::Value) {
    out!("{value}");
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create, list, describe and delete topics.
    #[command(subcommand)]
    Topics(Topics),
    /// List and describe consumer groups.
    #[command(subcommand)]
    Groups(Groups),
    /// The cluster: nodes, their state, the active controller.
    #[command(subcommand)]
    Cluster(Cluster),
    /// Inspect segment files offline (no broker needed): dump one, verify a data directory.
    #[command(subcommand)]
    Log(admin_log::LogCommand),
}

#[derive(Debug, Subcommand)]
enum Cluster {
    /// Describes the cluster: id, active controller, every node with its address and state.
    Describe,
}

#[derive(Debug, Subcommand)]
enum Groups {
    /// Lists consumer groups: id, state, protocol type.
    List,
    /// Describes a group: its members and what they are assigned, and per partition the
    /// committed offset, the log end offset and the lag between them.
    Describe {
        /// Group id.
        group: String,
        /// Redraw the description (lag included) every `--interval` until Ctrl-C, like
        /// `watch`. With `--output json`, one JSON document per refresh.
        #[arg(long)]
        watch: bool,
        /// Seconds between refreshes with `--watch` (at least 0.1).
        #[arg(long, value_name = "SECONDS", default_value_t = 2.0, requires = "watch")]
        interval: f64,
    },
}

#[derive(Debug, Subcommand)]
enum Topics {
    /// Creates a topic.
    Create {
        /// Topic name.
        name: String,
        /// Number of partitions [default: the broker's num_partitions].
        #[arg(long)]
        partitions: Option<i32>,
        /// Replicas per partition [default: the broker's default].
        #[arg(long, default_value_t = 0)]
        replication_factor: i32,
        /// Topic config override with Kafka's names (repeatable), e.g. retention.ms=3600000.
        #[arg(long = "config", value_name = "KEY=VALUE", value_parser = parse_key_value)]
        configs: Vec<(String, String)>,
    },
    /// Lists topic names and partition counts.
    List {
        /// Include internal topics such as __consumer_offsets.
        #[arg(long)]
        internal: bool,
    },
    /// Describes topics (all when no name is given): partitions, leaders, replicas, offsets.
    Describe {
        /// Topic names.
        names: Vec<String>,
    },
    /// Deletes a topic and its data.
    Delete {
        /// Topic name.
        name: String,
    },
    /// Adds partitions to a topic (the count only grows). Keyed records map to partitions by
    /// the partition count, so keys already written may land elsewhere afterwards.
    AddPartitions {
        /// Topic name.
        name: String,
        /// The new total number of partitions.
        #[arg(long)]
        partitions: i32,
        /// Replicas of each added partition, as Kafka's tools take them: partitions separated
        /// by commas, the node ids of one partition by colons (e.g. `1:2,2:3`). Default: placed
        /// by the controller.
        #[arg(long, value_name = "IDS", value_parser = parse_replica_assignment)]
        replica_assignment: Option<ReplicaAssignment>,
    },
    /// Deletes a partition's records below an offset (Kafka's DeleteRecords): the log start
    /// moves there on every in-sync replica, and consumers reading from the earliest offset
    /// start at it.
    DeleteRecords {
        /// Topic name.
        name: String,
        /// The partition.
        #[arg(long)]
        partition: i32,
        /// Records below this offset are deleted; -1 means the high watermark (everything
        /// committed).
        #[arg(long, allow_negative_numbers = true)]
        offset: i64,
        /// How long the leader waits for the in-sync replicas to follow (on top of
        /// --timeout-ms).
        #[arg(long, value_name = "MS", default_value_t = 30_000)]
        wait_ms: u32,
    },
    /// Moves partition leadership (Kafka's ElectLeaders): `preferred` gives each partition to
    /// the first replica of its assignment when that one is in sync; `unclean` gives a
    /// partition without a live leader to any live replica (records only others held are lost).
    ElectLeaders {
        /// Topic name; all topics when omitted.
        name: Option<String>,
        /// Only this partition of the topic.
        #[arg(long, requires = "name")]
        partition: Option<i32>,
        /// `preferred` or `unclean`.
        #[arg(long, value_enum, default_value_t = Election::Preferred)]
        election: Election,
    },
    /// Sets or removes a topic's config overrides, e.g. `min.insync.replicas=2`.
    AlterConfig {
        /// Topic name.
        name: String,
        /// Overrides to set, with Kafka's names.
        #[arg(value_name = "KEY=VALUE", value_parser = parse_key_value)]
        set: Vec<(String, String)>,
        /// Overrides to remove (back to the broker default; repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        delete: Vec<String>,
    },
}

/// The election types of `topics elect-leaders`, Kafka's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Election {
    Preferred,
    Unclean,
}

/// Replica node ids of each added partition (`--replica-assignment 1:2,2:3`). A newtype: clap
/// would take a bare `Option<Vec<..>>` for a repeatable flag.
#[derive(Debug, Clone)]
struct ReplicaAssignment(Vec<Vec<i32>>);

fn parse_replica_assignment(s: &str) -> Result<ReplicaAssignment, String> {
    s.split(',')
        .map(|partition| {
            partition
                .split(':')
                .map(|id| id.trim().parse::<i32>().map_err(|_| format!("{id:?} is not a node id")))
                .collect()
        })
        .collect::<Result<_, _>>()
        .map(ReplicaAssignment)
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.trim().to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

fn main() -> ExitCode {
    cli::init_logging();
    let args = Args::parse();
    if let Command::Log(cmd) = args.command {
        // Offline: no runtime, no cluster.
        return match admin_log::run(cmd) {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let config = ClientConfig::builder(args.bootstrap.clone())
        .client_id("strom-admin")
        .request_timeout(Duration::from_millis(args.timeout_ms))
        .build()
        .context("invalid settings")?;
    let client = Client::connect(config)
        .await
        .with_context(|| format!("cannot reach the cluster at {}", args.bootstrap))?;
    match args.command {
        Command::Topics(cmd) => topics(&client, cmd, args.output).await,
        Command::Groups(cmd) => groups(&client, cmd, args.output).await,
        Command::Cluster(Cluster::Describe) => describe_cluster(&client, args.output).await,
        // Handled in `main`, before any connection.
        Command::Log(_) => bail!("log commands run offline"),
    }
}

async fn describe_cluster(client: &Client, output: Output) -> anyhow::Result<()> {
    let response = client
        .admin()
        .describe_cluster(client.request(DescribeClusterRequest {}))
        .await
        .map_err(|s| explain(ClientError::from(s), ""))?
        .into_inner();
    let state = |fenced: bool| if fenced { "fenced" } else { "active" };
    if output == Output::Json {
        let nodes: Vec<serde_json::Value> = response
            .nodes
            .iter()
            .map(|n| {
                serde_json::json!({
                    "node_id": n.node_id,
                    "address": n.address,
                    "state": state(n.fenced),
                    "voter": n.voter,
                    "leader_partitions": n.leader_partitions,
                    "under_replicated_partitions": n.under_replicated_partitions,
                    "offline_partitions": n.offline_partitions,
                })
            })
            .collect();
        print_json(&serde_json::json!({
            "cluster_id": response.cluster_id,
            "controller_id": response.controller_id,
            "nodes": nodes,
        }));
        return Ok(());
    }
    let controller = match response.controller_id {
        id if id < 0 => "none".to_owned(),
        id => id.to_string(),
    };
    out!("Cluster: {}\tController: {controller}", response.cluster_id);
    let rows: Vec<Vec<String>> = response
        .nodes
        .iter()
        .map(|n| {
            vec![
                n.node_id.to_string(),
                n.address.clone(),
                state(n.fenced).to_owned(),
                if n.voter { "voter" } else { "broker" }.to_owned(),
                n.leader_partitions.to_string(),
                n.under_replicated_partitions.to_string(),
                n.offline_partitions.to_string(),
            ]
        })
        .collect();
    print_table(
        &["NODE", "ADDRESS", "STATE", "ROLE", "LEADER", "UNDER-REPLICATED", "OFFLINE"],
        &rows,
    );
    Ok(())
}

async fn groups(client: &Client, cmd: Groups, output: Output) -> anyhow::Result<()> {
    match cmd {
        Groups::List => {
            let response = client
                .group()
                .list_groups(client.request(ListGroupsRequest {}))
                .await
                .map_err(|s| explain(ClientError::from(s), ""))?
                .into_inner();
            let mut groups = response.groups;
            groups.sort_by(|a, b| a.group_id.cmp(&b.group_id));
            if output == Output::Json {
                let list: Vec<serde_json::Value> = groups
                    .iter()
                    .map(|g| {
                        serde_json::json!({
                            "group": g.group_id,
                            "state": g.state,
                            "protocol_type": g.protocol_type,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(list));
                return Ok(());
            }
            let rows: Vec<Vec<String>> = groups
                .into_iter()
                .map(|g| vec![g.group_id, dash(g.state), dash(g.protocol_type)])
                .collect();
            if !rows.is_empty() {
                print_table(&["GROUP", "STATE", "PROTOCOL-TYPE"], &rows);
            }
        }
        Groups::Describe { group, watch: false, .. } => {
            describe_group(client, &group, output).await?
        }
        Groups::Describe { group, watch: true, interval } => {
            watch_group(client, &group, output, interval).await?
        }
    }
    Ok(())
}

/// Where the group's coordinator is, from FindCoordinator.
async fn find_coordinator(client: &Client, group: &str) -> anyhow::Result<BrokerInfo> {
    let response = client
        .group()
        .find_coordinator(client.request(FindCoordinatorRequest { group_id: group.to_owned() }))
        .await
        .map_err(|s| explain(ClientError::from(s), ""))?
        .into_inner();
    check_code(response.error_code, &response.error_message)
        .map_err(|e| explain(e, ""))
        .with_context(|| format!("cannot find the coordinator of group {group:?}"))?;
    response
        .coordinator
        .with_context(|| format!("the cluster named no coordinator for group {group:?}"))
}

/// `groups describe --watch`: the description again and again until Ctrl-C (exit 0). A failed
/// refresh (a coordinator moving, a broker restarting) is shown and retried, not fatal.
async fn watch_group(
    client: &Client,
    group: &str,
    output: Output,
    interval: f64,
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    if !interval.is_finite() || interval < 0.1 {
        bail!("--interval must be at least 0.1 seconds, got {interval}");
    }
    let interval = Duration::from_secs_f64(interval);
    let redraw = output == Output::Text && std::io::stdout().is_terminal();
    let stop = tokio::signal::ctrl_c();
    tokio::pin!(stop);
    loop {
        if redraw {
            // Clear the screen and home the cursor: the view replaces itself.
            out!("\x1b[H\x1b[2J");
        }
        if output == Output::Text {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            out!(
                "Every {:.1}s: groups describe {group}    (unix time {now})",
                interval.as_secs_f64()
            );
        }
        if let Err(e) = describe_group(client, group, output).await {
            out!("error: {e:#}");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = &mut stop => return Ok(()),
        }
    }
}

async fn describe_group(client: &Client, group: &str, output: Output) -> anyhow::Result<()> {
    let mut coordinator = client.group_at(&find_coordinator(client, group).await?)?;
    let request = DescribeGroupsRequest { group_ids: vec![group.to_owned()] };
    let response = coordinator
        .describe_groups(client.request(request))
        .await
        .map_err(|s| explain(ClientError::from(s), ""))?
        .into_inner();
    let description = response
        .groups
        .into_iter()
        .find(|g| g.group_id == group)
        .with_context(|| format!("the coordinator did not describe group {group:?}"))?;
    if description.error_code == ErrorCode::GroupIdNotFound.code() || description.state == "Dead" {
        bail!("group {group:?} does not exist");
    }
    check_code(description.error_code, &description.error_message).map_err(|e| explain(e, ""))?;

    let request = OffsetFetchRequest { group_id: group.to_owned(), topics: Vec::new() };
    let offsets = coordinator
        .offset_fetch(client.request(request))
        .await
        .map_err(|s| explain(ClientError::from(s), ""))?
        .into_inner();
    check_code(offsets.error_code, &offsets.error_message).map_err(|e| explain(e, ""))?;

    let mut partitions = PartitionTable::new();
    for topic in offsets.topics {
        for p in topic.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                partitions.entry((topic.name.clone(), p.partition)).or_default().0 =
                    Some(p.committed_offset);
            }
        }
    }
    let members = member_rows(&description, &mut partitions);
    if output == Output::Json {
        return describe_group_json(client, &description, &partitions).await;
    }
    print_group_header(&description);
    if members.is_empty() {
        out!("\nNo active members.");
    } else {
        out!();
        print_table(&["MEMBER-ID", "CLIENT-ID", "ASSIGNMENT"], &members);
    }
    if partitions.is_empty() {
        out!("\nNo committed offsets.");
        return Ok(());
    }
    let mut rows = Vec::with_capacity(partitions.len());
    for ((topic, partition), (committed, owner)) in partitions {
        let end = client.list_offset(&topic, PartitionId::new(partition), OffsetSpec::Latest).await;
        let end = match end {
            Ok(end) => end.map(|o| o.get()),
            Err(e) => {
                tracing::warn!(%topic, partition, error = %e, "no log end offset");
                None
            }
        };
        let lag = match (committed, end) {
            (Some(c), Some(e)) => (e - c).max(0).to_string(),
            _ => "-".to_owned(),
        };
        rows.push(vec![
            topic,
            partition.to_string(),
            committed.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            end.map_or_else(|| "-".to_owned(), |e| e.to_string()),
            lag,
            owner.unwrap_or_else(|| "-".to_owned()),
        ]);
    }
    out!();
    print_table(&["TOPIC", "PARTITION", "COMMITTED", "LOG-END", "LAG", "OWNER"], &rows);
    Ok(())
}

async fn describe_group_json(
    client: &Client,
    d: &GroupDescription,
    partitions: &PartitionTable,
) -> anyhow::Result<()> {
    let members: Vec<serde_json::Value> = d
        .members
        .iter()
        .map(|m| {
            let assigned: Vec<serde_json::Value> = Assignment::decode(&m.assignment)
                .map(|a| {
                    a.partitions
                        .iter()
                        .map(|t| serde_json::json!({"topic": t.topic, "partitions": t.partitions}))
                        .collect()
                })
                .unwrap_or_default();
            serde_json::json!({
                "member_id": m.member_id,
                "client_id": m.client_id,
                "assignment": assigned,
            })
        })
        .collect();
    let mut offsets = Vec::new();
    for ((topic, partition), (committed, _)) in partitions {
        let Some(committed) = committed else { continue };
        let end = client.list_offset(topic, PartitionId::new(*partition), OffsetSpec::Latest).await;
        let lag = match end {
            Ok(Some(end)) => (end.get() - committed).max(0),
            _ => -1,
        };
        offsets.push(serde_json::json!({
            "topic": topic,
            "partition": partition,
            "committed": committed,
            "lag": lag,
        }));
    }
    print_json(&serde_json::json!([{
        "group": d.group_id,
        "state": d.state,
        "members": members,
        "offsets": offsets,
    }]));
    Ok(())
}

/// Every partition of a group with a committed offset or an owner: (committed, owner member).
type PartitionTable = BTreeMap<(String, i32), (Option<i64>, Option<String>)>;

fn print_group_header(d: &GroupDescription) {
    out!(
        "Group: {}\tState: {}\tProtocol: {}/{}\tGeneration: {}",
        d.group_id,
        dash(d.state.clone()),
        dash(d.protocol_type.clone()),
        dash(d.protocol.clone()),
        d.generation_id
    );
}

/// One row per member, with its assignment decoded (Kafka's ConsumerProtocol); records each
/// assigned partition's owner in `partitions`.
fn member_rows(d: &GroupDescription, partitions: &mut PartitionTable) -> Vec<Vec<String>> {
    let mut members: Vec<_> = d.members.iter().collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    let mut rows = Vec::with_capacity(members.len());
    for m in members {
        let assignment = if d.protocol_type != "consumer" && !d.protocol_type.is_empty() {
            format!("({} bytes, protocol type {})", m.assignment.len(), d.protocol_type)
        } else {
            match Assignment::decode(&m.assignment) {
                Ok(a) => {
                    let mut listed = Vec::new();
                    for t in &a.partitions {
                        let mut ps = t.partitions.clone();
                        ps.sort_unstable();
                        for p in &ps {
                            partitions.entry((t.topic.clone(), *p)).or_default().1 =
                                Some(m.member_id.clone());
                        }
                        let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                        listed.push(format!("{}:{}", t.topic, ps.join(",")));
                    }
                    if listed.is_empty() { "-".to_owned() } else { listed.join(" ") }
                }
                Err(e) => format!("(undecodable: {e})"),
            }
        };
        rows.push(vec![m.member_id.clone(), dash(m.client_id.clone()), assignment]);
    }
    rows
}

fn dash(s: String) -> String {
    if s.is_empty() { "-".to_owned() } else { s }
}

/// Prints left-aligned columns under a header, two spaces apart.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let padded: Vec<String> =
            cells.zip(&widths).map(|(c, w)| format!("{c:<w$}", w = *w)).collect();
        out!("{}", padded.join("  ").trim_end());
    };
    line(&mut header.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
}

async fn topics(client: &Client, cmd: Topics, output: Output) -> anyhow::Result<()> {
    match cmd {
        Topics::Create { name, partitions, replication_factor, configs } => {
            if partitions.is_some_and(|p| p <= 0) {
                bail!("--partitions must be at least 1");
            }
            // -1 asks the broker for its default, as Kafka's CreateTopics does.
            let partitions = partitions.unwrap_or(-1);
            if replication_factor < 0 {
                bail!("--replication-factor must not be negative");
            }
            let configs: HashMap<String, String> = configs.into_iter().collect();
            client
                .create_topic(&name, partitions, replication_factor, configs)
                .await
                .map_err(|e| explain(e, &name))?;
            if partitions > 0 {
                out!("Created topic {name} with {partitions} partition(s).");
            } else {
                out!("Created topic {name}.");
            }
        }
        Topics::List { internal } => {
            let mut topics = client.list_topics(internal).await.map_err(|e| explain(e, ""))?;
            topics.sort_by(|a, b| a.name.cmp(&b.name));
            if output == Output::Json {
                let list: Vec<serde_json::Value> = topics
                    .iter()
                    .map(|t| {
                        serde_json::json!({
                            "name": t.name,
                            "partitions": t.num_partitions,
                            "internal": t.internal,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(list));
                return Ok(());
            }
            for t in topics {
                if t.internal {
                    out!("{}\t{} partition(s)\tinternal", t.name, t.num_partitions);
                } else {
                    out!("{}\t{} partition(s)", t.name, t.num_partitions);
                }
            }
        }
        Topics::Describe { names } => {
            let mut descriptions =
                client.describe_topics(&names).await.map_err(|e| explain(e, ""))?;
            descriptions.sort_by(|a, b| a.name.cmp(&b.name));
            let mut failed = 0usize;
            let mut json = Vec::new();
            for d in &mut descriptions {
                if let Err(e) = check_code(d.error_code, &d.error_message) {
                    eprintln!("error: {:#}", explain(e, &d.name));
                    failed += 1;
                    continue;
                }
                fill_offsets_from_leaders(client, d).await;
                match output {
                    Output::Text => print_description(d),
                    Output::Json => json.push(description_json(d)),
                }
            }
            if output == Output::Json {
                print_json(&serde_json::Value::Array(json));
            }
            if failed > 0 {
                bail!("{failed} topic(s) could not be described");
            }
        }
        Topics::Delete { name } => {
            client.delete_topic(&name).await.map_err(|e| explain(e, &name))?;
            out!("Deleted topic {name}.");
        }
        Topics::AddPartitions { name, partitions, replica_assignment } => {
            if partitions <= 0 {
                bail!("--partitions must be at least 1");
            }
            use strom_client::proto::v1 as pb;
            let assignments = replica_assignment
                .map(|a| a.0)
                .unwrap_or_default()
                .into_iter()
                .map(|replicas| pb::ReplicaList { replicas })
                .collect();
            let request = pb::CreatePartitionsRequest {
                topics: vec![pb::PartitionsIncrease {
                    name: name.clone(),
                    count: partitions,
                    assignments,
                }],
                validate_only: false,
            };
            let response = client
                .admin()
                .create_partitions(client.request(request))
                .await
                .map_err(|s| explain(ClientError::from(s), &name))?
                .into_inner();
            let Some(result) = response.topics.into_iter().next() else {
                bail!("the broker did not answer for topic {name:?}");
            };
            check_code(result.error_code, &result.error_message).map_err(|e| explain(e, &name))?;
            out!("Topic {name} now has {partitions} partition(s).");
        }
        Topics::DeleteRecords { name, partition, offset, wait_ms } => {
            if offset < -1 {
                bail!("--offset must be an offset (>= 0) or -1 for the high watermark");
            }
            use strom_client::proto::v1 as pb;
            // Only the partition's leader deletes records.
            let leader = client
                .leader_for(&name, PartitionId::new(partition))
                .await
                .map_err(|e| explain(e, &name))?;
            let channel = client.broker_channel(leader).map_err(|e| explain(e, &name))?;
            let request = pb::DeleteRecordsRequest {
                partitions: vec![pb::DeleteRecordsPartition {
                    topic: name.clone(),
                    partition,
                    offset,
                }],
                timeout_ms: wait_ms,
            };
            let wait = Duration::from_millis(u64::from(wait_ms));
            let response = pb::admin_client::AdminClient::new(channel)
                .delete_records(client.request_with_extra(request, wait))
                .await
                .map_err(|s| explain(ClientError::from(s), &name))?
                .into_inner();
            let Some(result) = response.partitions.into_iter().next() else {
                bail!("the broker did not answer for {name}-{partition}");
            };
            check_code(result.error_code, &result.error_message).map_err(|e| explain(e, &name))?;
            if output == Output::Json {
                print_json(&serde_json::json!({
                    "topic": name,
                    "partition": partition,
                    "low_watermark": result.low_watermark,
                }));
            } else {
                out!(
                    "Deleted the records of {name}-{partition} below offset {} (its new low \
                     watermark).",
                    result.low_watermark
                );
            }
        }
        Topics::ElectLeaders { name, partition, election } => {
            use strom_client::proto::v1 as pb;
            let partitions: Vec<pb::ElectionPartition> = match (&name, partition) {
                (None, _) => Vec::new(),
                (Some(topic), Some(p)) => {
                    vec![pb::ElectionPartition { topic: topic.clone(), partition: p }]
                }
                (Some(topic), None) => {
                    let info = client.topic_metadata(topic).await.map_err(|e| explain(e, topic))?;
                    (0..info.num_partitions())
                        .map(|p| pb::ElectionPartition {
                            topic: topic.clone(),
                            partition: i32::try_from(p).unwrap_or(i32::MAX),
                        })
                        .collect()
                }
            };
            let request = pb::ElectLeadersRequest {
                election_type: match election {
                    Election::Preferred => 0,
                    Election::Unclean => 1,
                },
                all_partitions: name.is_none(),
                partitions,
            };
            let topic = name.clone().unwrap_or_default();
            let response = client
                .admin()
                .elect_leaders(client.request(request))
                .await
                .map_err(|s| explain(ClientError::from(s), &topic))?
                .into_inner();
            let mut failed = 0usize;
            let mut json = Vec::new();
            for r in &response.partitions {
                let code = ErrorCode::from_i32(r.error_code);
                let ok = matches!(code, ErrorCode::None | ErrorCode::ElectionNotNeeded);
                failed += usize::from(!ok);
                match output {
                    Output::Json => json.push(serde_json::json!({
                        "topic": r.topic,
                        "partition": r.partition,
                        "error": (code != ErrorCode::None).then(|| code.name()),
                        "message": r.error_message,
                        "leader": r.leader,
                    })),
                    Output::Text if code == ErrorCode::None => {
                        out!("{}-{}: leader is now {}", r.topic, r.partition, r.leader);
                    }
                    Output::Text if ok => {
                        out!("{}-{}: no election needed", r.topic, r.partition);
                    }
                    Output::Text => eprintln!(
                        "error: {}-{}: {} ({})",
                        r.topic,
                        r.partition,
                        r.error_message,
                        code.name()
                    ),
                }
            }
            if output == Output::Json {
                print_json(&serde_json::Value::Array(json));
            }
            if failed > 0 {
                bail!("{failed} partition(s) got no new leader");
            }
        }
        Topics::AlterConfig { name, set, delete } => {
            if set.is_empty() && delete.is_empty() {
                bail!("nothing to change: give KEY=VALUE pairs and/or --delete KEY");
            }
            let request = strom_client::proto::v1::AlterConfigsRequest {
                topic: name.clone(),
                set: set.into_iter().collect(),
                delete,
                validate_only: false,
            };
            let response = client
                .admin()
                .alter_configs(client.request(request))
                .await
                .map_err(|s| explain(ClientError::from(s), &name))?
                .into_inner();
            check_code(response.error_code, &response.error_message)
                .map_err(|e| explain(e, &name))?;
            out!("Altered the config of topic {name}.");
        }
    }
    Ok(())
}

/// Turns the cluster's answer into a sentence a user can act on.
fn explain(e: ClientError, topic: &str) -> anyhow::Error {
    match &e {
        ClientError::UnknownTopic(t) => anyhow::anyhow!("topic {t:?} does not exist"),
        ClientError::Broker { code: ErrorCode::TopicAlreadyExists, .. } => {
            anyhow::anyhow!("topic {topic:?} already exists")
        }
        ClientError::Broker { code: ErrorCode::UnknownTopicOrPartition, .. } => {
            anyhow::anyhow!("topic {topic:?} does not exist")
        }
        ClientError::Broker { code, message } if message.is_empty() => {
            anyhow::anyhow!("{} ({code:?})", code.name())
        }
        ClientError::Broker { code, message } => {
            anyhow::anyhow!("{message} ({})", code.name())
        }
        _ => anyhow::Error::new(e),
    }
}

/// A node answers offsets only for the partitions it leads; the rest it reports as -1. Ask
/// each partition's leader for those.
async fn fill_offsets_from_leaders(client: &Client, d: &mut TopicDescription) {
    for p in &mut d.partitions {
        if p.high_watermark >= 0 || p.leader < 0 {
            continue;
        }
        let id = PartitionId::new(p.partition);
        if let Ok(Some(hw)) = client.list_offset(&d.name, id, OffsetSpec::Latest).await {
            p.high_watermark = hw.get();
        }
        if let Ok(Some(start)) = client.list_offset(&d.name, id, OffsetSpec::Earliest).await {
            p.log_start_offset = start.get();
        }
    }
}

fn description_json(d: &TopicDescription) -> serde_json::Value {
    let mut partitions: Vec<_> = d.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition);
    let partitions: Vec<serde_json::Value> = partitions
        .iter()
        .map(|p| {
            serde_json::json!({
                "partition": p.partition,
                "leader": p.leader,
                "leader_epoch": p.leader_epoch,
                "replicas": p.replicas,
                "isr": p.isr,
                "high_watermark": p.high_watermark,
                "log_start_offset": p.log_start_offset,
            })
        })
        .collect();
    serde_json::json!({
        "name": d.name,
        "internal": d.internal,
        "partitions": partitions,
        "configs": d.configs,
    })
}

fn print_description(d: &TopicDescription) {
    let mut configs: Vec<String> = d.configs.iter().map(|(k, v)| format!("{k}={v}")).collect();
    configs.sort();
    out!(
        "Topic: {}\tPartitions: {}{}\tConfigs: {}",
        d.name,
        d.partitions.len(),
        if d.internal { "\tInternal: true" } else { "" },
        if configs.is_empty() { "-".to_owned() } else { configs.join(",") }
    );
    let header =
        ["PARTITION", "LEADER", "EPOCH", "REPLICAS", "ISR", "START-OFFSET", "HIGH-WATERMARK"];
    let mut rows: Vec<[String; 7]> = Vec::with_capacity(d.partitions.len());
    let mut partitions: Vec<_> = d.partitions.iter().collect();
    partitions.sort_by_key(|p| p.partition);
    let list = |ids: &[i32]| ids.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
    for p in partitions {
        rows.push([
            p.partition.to_string(),
            if p.leader < 0 { "none".to_owned() } else { p.leader.to_string() },
            p.leader_epoch.to_string(),
            list(&p.replicas),
            list(&p.isr),
            p.log_start_offset.to_string(),
            p.high_watermark.to_string(),
        ]);
    }
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> =
            cells.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        out!("  {}", padded.join("  ").trim_end());
    };
    line(&header);
    for row in &rows {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        line(&cells);
    }
    for p in &d.partitions {
        if !p.storage_error.is_empty() {
            out!("  partition {}: STORAGE ERROR: {}", p.partition, p.storage_error);
        }
    }
}
