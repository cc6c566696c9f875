//! The command line: verbs and the options every verb shares.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// A content-addressed artifact registry whose source of truth is an append-only event log.
#[derive(Debug, Parser)]
#[command(
    name = "artifactstore",
    version,
    after_help = "Exit codes: 0 when the verb succeeded; 1 when `verify` or `replay --verify` found a fault; 2 for a \
                  usage error or a failure (the message says which)."
)]
pub struct Cli {
    /// Log filter in `tracing` syntax, e.g. `info` or `artifactstore=debug`.
    #[arg(long, global = true, env = "ARTIFACTSTORE_LOG")]
    pub log: Option<String>,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The verbs.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the service.
    ///
    /// Example: `artifactstore serve --listen 0.0.0.0:8080 --database postgres://registry@db/registry`
    Serve(ServeArgs),
    /// Apply database migrations and exit.
    ///
    /// Example: `artifactstore migrate --data /var/lib/artifactstore`
    Migrate(InstanceArgs),
    /// Rebuild every materialised view from the event log.
    ///
    /// Example: `artifactstore replay --verify` (rebuild aside and list differences from the live views)
    Replay(ReplayArgs),
    /// Check the hash chain and that the views equal a fresh replay of the log.
    ///
    /// Example: `artifactstore verify --blobs --json`
    Verify(VerifyArgs),
    /// Write the views, stamped with the head's sequence and chain hash, as canonical CBOR into the blob store.
    ///
    /// Example: `artifactstore snapshot --data /var/lib/artifactstore`
    Snapshot(InstanceArgs),
    /// Seal every event not yet archived into archive segments in the blob store, then exit.
    ///
    /// Example: `artifactstore archive --store s3://bucket/registry`
    Archive(InstanceArgs),
    /// Rebuild an empty database from the event archive in a blob store: events, verified chain, then views.
    ///
    /// Example: `artifactstore restore --database postgres://registry@db/new --from s3://bucket/registry`
    Restore(RestoreArgs),
    /// Client: push files through resumable upload sessions, and optionally publish them as a package version.
    ///
    /// Example: `artifactstore upload --server http://127.0.0.1:8080 --package team/app@1.2.0 dist/app.tar.gz`
    Upload(UploadArgs),
    /// Client: follow the event feed and print each event, resumable with `--since`.
    ///
    /// Example: `artifactstore tail --server http://127.0.0.1:8080 --since 0 --type 'v1.package.*' --json`
    Tail(TailArgs),
    /// Publish every event, in order and exactly once, to a NATS JetStream stream.
    ///
    /// Example: `artifactstore relay --nats nats://127.0.0.1:4222 --stream ARTIFACTSTORE`
    Relay(RelayArgs),
    /// Expire the package versions the retention policies let go, now, and print the report.
    ///
    /// Example: `artifactstore gc --dry-run --json`
    Gc(GcArgs),
    /// Print a shell completion script for this command line.
    ///
    /// Example: `artifactstore completions bash > /etc/bash_completion.d/artifactstore`
    Completions(CompletionsArgs),
    /// Print the manual page (roff).
    ///
    /// Example: `artifactstore man > artifactstore.1 && man ./artifactstore.1`
    Man,
}

/// Options of `completions`.
#[derive(Debug, Clone, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// The shells `completions` writes for.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Shell {
    /// GNU Bash.
    Bash,
    /// Z shell.
    Zsh,
    /// fish.
    Fish,
}

/// Options of `gc`.
#[derive(Debug, Clone, Args)]
pub struct GcArgs {
    /// Where the instance keeps its data.
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Decide and report, commit nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Options of `relay`.
#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Where the instance keeps its data.
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// The NATS server [default: nats://127.0.0.1:4222].
    #[arg(long, env = "ARTIFACTSTORE_RELAY_NATS")]
    pub nats: Option<String>,

    /// The JetStream stream, created if absent [default: ARTIFACTSTORE].
    #[arg(long, env = "ARTIFACTSTORE_RELAY_STREAM")]
    pub stream: Option<String>,

    /// Subjects are `PREFIX.<event_type>` [default: artifactstore].
    #[arg(long, env = "ARTIFACTSTORE_RELAY_SUBJECT_PREFIX")]
    pub subject_prefix: Option<String>,
}

/// Options of `tail`.
#[derive(Debug, Clone, Args)]
pub struct TailArgs {
    /// Which registry, as whom.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print events after this sequence (0: from the start).
    #[arg(long, default_value_t = 0)]
    pub since: u64,

    /// Only events of this type, or a prefix such as `v1.package.*`.
    #[arg(long = "type", value_name = "TYPE")]
    pub event_type: Option<String>,

    /// Print each event as one line of JSON (its envelope) instead of a summary.
    #[arg(long)]
    pub json: bool,

    /// Stop once the head (as of the last answer) has been reached, instead of waiting for more.
    #[arg(long)]
    pub exit_at_head: bool,
}

/// How a client verb reaches the registry.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The registry's base URL, e.g. `http://127.0.0.1:8080`.
    #[arg(long, env = "ARTIFACTSTORE_SERVER")]
    pub server: String,

    /// Bearer token.
    #[arg(long, env = "ARTIFACTSTORE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Options of `replay`.
#[derive(Debug, Clone, Args)]
pub struct ReplayArgs {
    /// Where the instance keeps its data.
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Rebuild aside and report every difference from the live views instead of replacing them (exit 1 on any).
    #[arg(long)]
    pub verify: bool,

    /// Start from the newest snapshot that matches the log (see `snapshot`) and replay only what follows it.
    #[arg(long, conflicts_with = "verify")]
    pub from_snapshot: bool,
}

/// Options of `restore`.
#[derive(Debug, Clone, Args)]
pub struct RestoreArgs {
    /// The instance to restore into (its database must be empty or new).
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// The blob store holding the archive [default: the instance's store].
    #[arg(long, value_name = "STORE_URL")]
    pub from: Option<String>,

    /// Which archived log, when the archive holds several.
    #[arg(long)]
    pub log_id: Option<uuid::Uuid>,
}

/// Options of `verify`.
#[derive(Debug, Clone, Args)]
pub struct VerifyArgs {
    /// Where the instance keeps its data.
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Also read every stored blob and check both digests and its size, check that every blob the views name is
    /// stored, and list orphan blobs (stored, named by no event).
    #[arg(long)]
    pub blobs: bool,

    /// Print the report as one JSON document: `ok`, `chain`, `views` and `blobs` (`null` without `--blobs`).
    #[arg(long)]
    pub json: bool,
}

/// Options of `upload`.
#[derive(Debug, Clone, Args)]
pub struct UploadArgs {
    /// Which registry, as whom.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Publish the files as this package version (`NAME@VERSION`); each file is named by its file name.
    #[arg(long, value_name = "NAME@VERSION")]
    pub package: Option<String>,

    /// Bytes per upload request.
    #[arg(long, default_value_t = 8 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..=1024 * 1024 * 1024))]
    pub chunk_size: u64,

    /// How many times in a row a failed request is retried (resuming from the server's offset) before giving up.
    #[arg(long, default_value_t = 8)]
    pub retries: u32,

    /// The files to upload.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
}

/// Where an instance keeps its data; shared by every verb that works on an instance.
#[derive(Debug, Clone, Default, Args)]
pub struct InstanceArgs {
    /// Configuration file (TOML); flags and environment override it.
    #[arg(long, env = "ARTIFACTSTORE_CONFIG")]
    pub config: Option<PathBuf>,

    /// Data directory: the SQLite database and the blob store live here unless told otherwise [default: ./data].
    #[arg(long, env = "ARTIFACTSTORE_DATA")]
    pub data: Option<PathBuf>,

    /// Database URL: `sqlite://PATH` or `postgres://...` [default: sqlite://DATA/artifactstore.db].
    #[arg(long, env = "ARTIFACTSTORE_DATABASE")]
    pub database: Option<String>,

    /// Blob store URL: `file:///PATH` [default: file://DATA/blobs].
    #[arg(long, env = "ARTIFACTSTORE_STORE")]
    pub store: Option<String>,
}

/// Options of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Where the instance keeps its data.
    #[command(flatten)]
    pub instance: InstanceArgs,

    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "ARTIFACTSTORE_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Also relay every event to this NATS server's JetStream, in-process (see `relay`).
    #[arg(long, env = "ARTIFACTSTORE_RELAY_NATS")]
    pub relay_nats: Option<String>,
}
