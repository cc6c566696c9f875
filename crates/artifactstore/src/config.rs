//! Configuration: defaults, then an optional TOML file, then environment and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use artifactstore_blobstore::Location;
use artifactstore_db::redact_url;
use serde::Deserialize;

use crate::auth::{Scope, TokenConfig};

use crate::cli::{InstanceArgs, ServeArgs};

/// The listen address when none is configured.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";

/// What the configuration file may hold; every key is optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// Data directory.
    pub data: Option<PathBuf>,
    /// Database URL.
    pub database: Option<String>,
    /// Blob store URL.
    pub store: Option<String>,
    /// Listen address.
    pub listen: Option<SocketAddr>,
    /// Upload limits.
    #[serde(default)]
    pub uploads: UploadsFile,
    /// Bearer tokens; none means an open instance.
    #[serde(default)]
    pub tokens: Vec<TokenFile>,
    /// The broker relay.
    #[serde(default)]
    pub relay: RelayFile,
    /// The event archive.
    #[serde(default)]
    pub archive: ArchiveFile,
    /// Lifecycle runs.
    #[serde(default)]
    pub gc: GcFile,
    /// The live feed.
    #[serde(default)]
    pub feed: FeedFile,
    /// Client connections.
    #[serde(default)]
    pub http: HttpFile,
}

/// `[http]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpFile {
    /// Seconds a client has to send a request's head; also the longest a kept-alive connection may sit idle between
    /// requests [default: 30].
    pub header_read_secs: Option<u64>,
    /// Open connections at most; past it, a new connection is answered `503` and closed [default: the process's
    /// open file limit less 256].
    pub max_connections: Option<usize>,
    /// Seconds a response may wait on a client that accepts none of its bytes before the connection is closed
    /// [default: 60].
    pub send_stall_secs: Option<u64>,
}

/// Limits on client connections.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a client has to send a request's head, counted from the connection's start or the end of the
    /// response before; a connection that takes longer is closed.
    pub header_read: std::time::Duration,
    /// Open connections at most.
    pub max_open: usize,
    /// How long a response may wait on a client that takes none of its bytes; the connection is then closed, and
    /// what the response held is let go.
    pub send_stall: std::time::Duration,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_read: std::time::Duration::from_secs(30),
            max_open: default_max_connections(),
            send_stall: std::time::Duration::from_secs(60),
        }
    }
}

impl ConnectionLimits {
    fn merge(file: &HttpFile) -> anyhow::Result<ConnectionLimits> {
        let defaults = ConnectionLimits::default();
        let limits = ConnectionLimits {
            header_read: file.header_read_secs.map_or(defaults.header_read, std::time::Duration::from_secs),
            max_open: file.max_connections.unwrap_or(defaults.max_open),
            send_stall: file.send_stall_secs.map_or(defaults.send_stall, std::time::Duration::from_secs),
        };
        if limits.header_read.is_zero() || limits.max_open == 0 || limits.send_stall.is_zero() {
            bail!("[http]: header_read_secs, max_connections and send_stall_secs must be above zero");
        }
        Ok(limits)
    }
}

/// The process's open file limit less what the database, the store and the log may hold open, or 10,000 where the
/// limit cannot be read.
fn default_max_connections() -> usize {
    let soft = std::fs::read_to_string("/proc/self/limits").ok().and_then(|text| {
        let line = text.lines().find(|line| line.starts_with("Max open files"))?;
        line.split_whitespace().nth(3)?.parse::<usize>().ok()
    });
    soft.map_or(10_000, |n| n.saturating_sub(256).max(64))
}

/// `[feed]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedFile {
    /// On PostgreSQL, milliseconds between reads of the head that find other instances' commits should a wake-up
    /// be lost [default: 250].
    pub head_poll_ms: Option<u64>,
}

/// Milliseconds between head polls when `[feed] head_poll_ms` is not set.
pub const DEFAULT_HEAD_POLL_MS: u64 = 250;

impl FeedFile {
    /// How often an instance on PostgreSQL reads the head besides its wake-ups.
    pub fn head_poll(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.head_poll_ms.unwrap_or(DEFAULT_HEAD_POLL_MS).max(1))
    }
}

/// `[gc]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GcFile {
    /// Seconds between lifecycle runs of `serve` [default: 3600; 0 turns the timer off].
    pub interval_secs: Option<u64>,
    /// Seconds a blob stays after its last reference ended (or its ingestion, if it never had one) before
    /// collection may remove it [default: 86400].
    pub grace_secs: Option<u64>,
}

/// Seconds between lifecycle runs when `[gc] interval_secs` is not set.
pub const DEFAULT_GC_INTERVAL_SECS: u64 = 3600;
/// Seconds of grace before collection when `[gc] grace_secs` is not set.
pub const DEFAULT_GC_GRACE_SECS: u64 = 86_400;

impl GcFile {
    /// How often `serve` runs the lifecycle; `None` when the timer is off.
    pub fn every(&self) -> Option<std::time::Duration> {
        let secs = self.interval_secs.unwrap_or(DEFAULT_GC_INTERVAL_SECS);
        (secs > 0).then(|| std::time::Duration::from_secs(secs))
    }

    /// How long an unreferenced blob is kept before collection may remove it.
    pub fn grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.grace_secs.unwrap_or(DEFAULT_GC_GRACE_SECS))
    }
}

/// `[archive]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ArchiveFile {
    /// Archive the log into the blob store [default: on for S3 stores, off otherwise].
    pub enabled: Option<bool>,
    /// Events per sealed segment.
    pub segment_events: Option<u64>,
    /// Seconds an unarchived event may wait before a shorter segment is sealed.
    pub segment_seconds: Option<u64>,
}

/// `[relay]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayFile {
    /// The NATS server; setting it makes `serve` relay in-process.
    pub nats: Option<String>,
    /// The JetStream stream.
    pub stream: Option<String>,
    /// The subject prefix.
    pub subject_prefix: Option<String>,
}

impl RelayFile {
    /// The relay configuration, flags over file over defaults; `None` when no NATS server is named anywhere and
    /// `required` is false.
    pub fn resolve(
        &self,
        nats: Option<&str>,
        stream: Option<&str>,
        prefix: Option<&str>,
        required: bool,
    ) -> Option<crate::relay::RelayConfig> {
        let defaults = crate::relay::RelayConfig::default();
        let url = nats.map(str::to_owned).or_else(|| self.nats.clone());
        if url.is_none() && !required {
            return None;
        }
        Some(crate::relay::RelayConfig {
            url: url.unwrap_or(defaults.url),
            stream: stream.map(str::to_owned).or_else(|| self.stream.clone()).unwrap_or(defaults.stream),
            subject_prefix: prefix
                .map(str::to_owned)
                .or_else(|| self.subject_prefix.clone())
                .unwrap_or(defaults.subject_prefix),
        })
    }
}

/// `[uploads]` in the configuration file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsFile {
    /// Seconds a session may sit idle before it expires.
    pub session_idle_secs: Option<u64>,
    /// The largest body one upload request may carry, in bytes.
    pub max_chunk_bytes: Option<u64>,
    /// The largest blob, in bytes.
    pub max_blob_bytes: Option<u64>,
    /// How many upload sessions may be open at once.
    pub max_open_sessions: Option<u64>,
    /// How many of them one subject (a token's, or the anonymous caller's) may hold.
    pub max_sessions_per_subject: Option<u64>,
    /// Seconds a request body may send nothing before the request is ended.
    pub body_idle_secs: Option<u64>,
    /// Bytes a second a request body must average over each `body_idle_secs`; 0 turns the floor off.
    pub min_body_bytes_per_sec: Option<u64>,
}

/// One `[[tokens]]` entry in the configuration file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    /// The secret the client sends as `Authorization: Bearer <token>`.
    pub token: String,
    /// Who the token speaks for: the `actor` of the events it causes.
    pub subject: String,
    /// `read`, `write`, `admin`.
    pub scopes: Vec<String>,
    /// Package-name prefixes the scopes apply to; `[""]` (the default) is every package.
    #[serde(default = "every_package")]
    pub prefixes: Vec<String>,
}

fn every_package() -> Vec<String> {
    vec![String::new()]
}

/// Limits on upload sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadLimits {
    /// How long a session may sit idle before it expires and its bytes are reclaimed.
    pub session_idle: std::time::Duration,
    /// The largest body one upload request may carry.
    pub max_chunk_bytes: u64,
    /// The largest blob.
    pub max_blob_bytes: u64,
    /// How many sessions may be open at once.
    pub max_open_sessions: u64,
    /// How many of them one subject may hold (by default a quarter of `max_open_sessions`), so one caller cannot
    /// lock every other out.
    pub max_sessions_per_subject: u64,
    /// How long a request body may send nothing before the request is ended with `408` (for an upload, the
    /// session is then free again at its last acknowledged offset). Applies to every request body.
    pub body_idle: std::time::Duration,
    /// Bytes a second every request body must average over each `body_idle`, or be ended with `408` as a silent
    /// one is; 0 is no floor.
    pub min_body_rate: u64,
}

/// Blob size cap on S3 stores: the commit's server-side copy is one `CopyObject`, which S3 allows up to 5 GiB.
pub const S3_MAX_BLOB_BYTES: u64 = 5 * 1024 * 1024 * 1024;

impl Default for UploadLimits {
    fn default() -> Self {
        Self {
            session_idle: std::time::Duration::from_secs(24 * 60 * 60),
            max_chunk_bytes: 1024 * 1024 * 1024,
            max_blob_bytes: 64 * 1024 * 1024 * 1024,
            max_open_sessions: 10_000,
            max_sessions_per_subject: 2_500,
            body_idle: std::time::Duration::from_secs(60),
            min_body_rate: 500,
        }
    }
}

impl UploadLimits {
    fn merge(file: &UploadsFile, store: &Location) -> anyhow::Result<UploadLimits> {
        let defaults = UploadLimits::default();
        let s3 = matches!(store, Location::S3 { .. });
        let limits = UploadLimits {
            session_idle: file.session_idle_secs.map_or(defaults.session_idle, std::time::Duration::from_secs),
            max_chunk_bytes: file.max_chunk_bytes.unwrap_or(defaults.max_chunk_bytes),
            max_blob_bytes: file.max_blob_bytes.unwrap_or(if s3 { S3_MAX_BLOB_BYTES } else { defaults.max_blob_bytes }),
            max_open_sessions: file.max_open_sessions.unwrap_or(defaults.max_open_sessions),
            max_sessions_per_subject: file.max_sessions_per_subject.unwrap_or_else(|| {
                file.max_open_sessions.map_or(defaults.max_sessions_per_subject, |most| most.div_ceil(4))
            }),
            body_idle: file.body_idle_secs.map_or(defaults.body_idle, std::time::Duration::from_secs),
            min_body_rate: file.min_body_bytes_per_sec.unwrap_or(defaults.min_body_rate),
        };
        if limits.session_idle.is_zero()
            || limits.max_chunk_bytes == 0
            || limits.max_open_sessions == 0
            || limits.max_sessions_per_subject == 0
            || limits.body_idle.is_zero()
        {
            bail!(
                "[uploads]: session_idle_secs, max_chunk_bytes, max_open_sessions, max_sessions_per_subject and \
                 body_idle_secs must be above zero"
            );
        }
        if s3 && limits.max_blob_bytes > S3_MAX_BLOB_BYTES {
            bail!("[uploads] max_blob_bytes: S3 stores hold blobs of at most 5 GiB (one CopyObject at commit)");
        }
        Ok(limits)
    }
}

fn tokens(entries: &[TokenFile]) -> anyhow::Result<Vec<TokenConfig>> {
    let mut seen = std::collections::HashSet::new();
    entries
        .iter()
        .enumerate()
        .map(|(i, t)| {
            if t.token.len() < 16 {
                bail!("tokens[{i}] ({}): a token must be at least 16 characters", t.subject);
            }
            if !seen.insert(t.token.as_str()) {
                bail!("tokens[{i}] ({}): the same token is configured twice", t.subject);
            }
            if t.subject.is_empty() {
                bail!("tokens[{i}]: the subject may not be empty");
            }
            // The subject is the actor of every event the token causes; the log refuses longer ones.
            if t.subject.len() > artifactstore_eventlog::MAX_ACTOR_BYTES {
                bail!(
                    "tokens[{i}]: the subject may be at most {} bytes (it is {})",
                    artifactstore_eventlog::MAX_ACTOR_BYTES,
                    t.subject.len()
                );
            }
            let scopes = t
                .scopes
                .iter()
                .map(|s| Scope::parse(s).with_context(|| format!("tokens[{i}] ({})", t.subject)))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if scopes.is_empty() {
                bail!("tokens[{i}] ({}): give at least one scope", t.subject);
            }
            if t.prefixes.is_empty() {
                bail!("tokens[{i}] ({}): give at least one prefix (`[\"\"]` is every package)", t.subject);
            }
            for prefix in &t.prefixes {
                crate::names::check_prefix(prefix)
                    .map_err(|err| anyhow::anyhow!("tokens[{i}] ({}): {err}", t.subject))?;
            }
            Ok(TokenConfig::new(&t.token, &t.subject, scopes, t.prefixes.clone()))
        })
        .collect()
}

impl FileConfig {
    /// Reads the file named by `--config`, or nothing.
    pub fn for_args(args: &InstanceArgs) -> anyhow::Result<FileConfig> {
        match &args.config {
            Some(path) => FileConfig::load(path),
            None => Ok(FileConfig::default()),
        }
    }

    fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }
}

/// The resolved configuration of one instance.
#[derive(Clone)]
pub struct InstanceConfig {
    /// Data directory.
    pub data: PathBuf,
    /// Database URL (may hold a password: never print it whole).
    pub database: String,
    /// Blob store.
    pub store: Location,
    /// Upload limits.
    pub uploads: UploadLimits,
    /// Bearer tokens; empty means an open instance.
    pub tokens: Vec<TokenConfig>,
    /// How long an unreferenced blob is kept before collection may remove it (`[gc] grace_secs`).
    pub gc_grace: std::time::Duration,
    /// On PostgreSQL, how often the head is read besides the wake-ups other instances' commits send
    /// (`[feed] head_poll_ms`).
    pub head_poll: std::time::Duration,
    /// Limits on client connections (`[http]`).
    pub connections: ConnectionLimits,
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConfig")
            .field("data", &self.data)
            .field("database", &redact_url(&self.database))
            .field("store", &self.store)
            .field("uploads", &self.uploads)
            .field("tokens", &self.tokens.len())
            .finish()
    }
}

/// The resolved configuration of `serve`.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// Where the data lives.
    pub instance: InstanceConfig,
    /// Where to listen.
    pub listen: SocketAddr,
    /// The in-process relay, if configured.
    pub relay: Option<crate::relay::RelayConfig>,
    /// The archiver, if on.
    pub archive: Option<crate::archive::ArchiveConfig>,
    /// How often to run the lifecycle; `None` when the timer is off.
    pub gc_every: Option<std::time::Duration>,
}

impl InstanceConfig {
    /// Resolves flags and environment (already merged by clap) over the file over the defaults.
    pub fn resolve(args: &InstanceArgs) -> anyhow::Result<InstanceConfig> {
        let file = match &args.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        Self::merge(args, &file)
    }

    fn merge(args: &InstanceArgs, file: &FileConfig) -> anyhow::Result<InstanceConfig> {
        let data = args.data.clone().or_else(|| file.data.clone()).unwrap_or_else(|| PathBuf::from("./data"));
        let database = match args.database.clone().or_else(|| file.database.clone()) {
            Some(url) => url,
            None => format!("sqlite://{}", data.join("artifactstore.db").display()),
        };
        let store = match args.store.as_deref().or(file.store.as_deref()) {
            Some(url) => Location::parse(url)?,
            None => Location::File(data.join("blobs")),
        };
        let uploads = UploadLimits::merge(&file.uploads, &store)?;
        let tokens = tokens(&file.tokens)?;
        let gc_grace = file.gc.grace();
        let head_poll = file.feed.head_poll();
        let connections = ConnectionLimits::merge(&file.http)?;
        Ok(InstanceConfig { data, database, store, uploads, tokens, gc_grace, head_poll, connections })
    }
}

impl ServeConfig {
    /// Resolves `serve`'s options.
    pub fn resolve(args: &ServeArgs) -> anyhow::Result<ServeConfig> {
        let file = match &args.instance.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::default(),
        };
        let instance = InstanceConfig::merge(&args.instance, &file)?;
        let listen = match args.listen.or(file.listen) {
            Some(addr) => addr,
            None => DEFAULT_LISTEN.parse().expect("the default listen address parses"),
        };
        let relay = file.relay.resolve(args.relay_nats.as_deref(), None, None, false);
        let s3 = matches!(instance.store, Location::S3 { .. });
        let archive = file.archive.enabled.unwrap_or(s3).then(|| {
            let defaults = crate::archive::ArchiveConfig::default();
            crate::archive::ArchiveConfig {
                segment_events: file.archive.segment_events.unwrap_or(defaults.segment_events).max(1),
                segment_age: file.archive.segment_seconds.map_or(defaults.segment_age, std::time::Duration::from_secs),
            }
        });
        let gc_every = file.gc.every();
        Ok(ServeConfig { instance, listen, relay, archive, gc_every })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_need_no_configuration() {
        let config = InstanceConfig::merge(&InstanceArgs::default(), &FileConfig::default()).unwrap();
        assert_eq!(config.data, PathBuf::from("./data"));
        assert_eq!(config.database, "sqlite://./data/artifactstore.db");
        assert_eq!(config.store, Location::File(PathBuf::from("./data/blobs")));
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str("data = \"/srv/a\"\nstore = \"file:///srv/blobs\"\n").unwrap();
        let args = InstanceArgs { data: Some("/flag".into()), ..InstanceArgs::default() };
        let config = InstanceConfig::merge(&args, &file).unwrap();
        assert_eq!(config.data, PathBuf::from("/flag"));
        assert_eq!(config.database, "sqlite:///flag/artifactstore.db");
        assert_eq!(config.store, Location::File(PathBuf::from("/srv/blobs")));
    }

    #[test]
    fn the_lifecycle_timer_runs_hourly_unless_told_otherwise() {
        let hour = std::time::Duration::from_secs(3600);
        assert_eq!(FileConfig::default().gc.every(), Some(hour));
        let every_minute: FileConfig = toml::from_str("[gc]\ninterval_secs = 60\n").unwrap();
        assert_eq!(every_minute.gc.every(), Some(std::time::Duration::from_secs(60)));
        let off: FileConfig = toml::from_str("[gc]\ninterval_secs = 0\n").unwrap();
        assert_eq!(off.gc.every(), None);
        assert_eq!(FileConfig::default().gc.grace(), std::time::Duration::from_secs(86_400));
        let no_grace: FileConfig = toml::from_str("[gc]\ngrace_secs = 0\n").unwrap();
        assert_eq!(no_grace.gc.grace(), std::time::Duration::ZERO);
        assert!(toml::from_str::<FileConfig>("[gc]\ninterval = 5\n").is_err());
    }

    #[test]
    fn unknown_file_keys_and_stores_are_refused() {
        assert!(toml::from_str::<FileConfig>("databse = \"x\"").is_err());
        assert!(Location::parse("ftp://x").is_err());
        assert!(Location::parse("file://").is_err());
    }

    #[test]
    fn tokens_and_limits_are_checked() {
        let file: FileConfig = toml::from_str(
            "[uploads]\nmax_chunk_bytes = 1024\n\n[[tokens]]\ntoken = \"0123456789abcdef\"\nsubject = \"ci\"\n\
             scopes = [\"write\"]\nprefixes = [\"team/\"]\n",
        )
        .unwrap();
        let config = InstanceConfig::merge(&InstanceArgs::default(), &file).unwrap();
        assert_eq!(config.uploads.max_chunk_bytes, 1024);
        assert_eq!(config.uploads.max_sessions_per_subject, 2_500, "a quarter of the default 10,000");
        let shares: FileConfig = toml::from_str("[uploads]\nmax_open_sessions = 10\n").unwrap();
        let limits = InstanceConfig::merge(&InstanceArgs::default(), &shares).unwrap().uploads;
        assert_eq!(limits.max_sessions_per_subject, 3, "a quarter of 10, rounded up");
        let none: FileConfig = toml::from_str("[uploads]\nmax_sessions_per_subject = 0\n").unwrap();
        assert!(InstanceConfig::merge(&InstanceArgs::default(), &none).is_err());
        assert_eq!(config.tokens.len(), 1);
        let short: FileConfig =
            toml::from_str("[[tokens]]\ntoken = \"short\"\nsubject = \"x\"\nscopes = [\"read\"]\n").unwrap();
        assert!(InstanceConfig::merge(&InstanceArgs::default(), &short).is_err());
        let bad_scope: FileConfig =
            toml::from_str("[[tokens]]\ntoken = \"0123456789abcdef\"\nsubject = \"x\"\nscopes = [\"root\"]\n").unwrap();
        assert!(InstanceConfig::merge(&InstanceArgs::default(), &bad_scope).is_err());
        // A token over no prefix, or over something that is not a name prefix, is refused at start-up.
        for prefixes in ["[]", "[\"Team/\"]", "[\"team/*\"]", "[\"team//\"]"] {
            let text = format!(
                "[[tokens]]\ntoken = \"0123456789abcdef\"\nsubject = \"x\"\nscopes = [\"read\"]\nprefixes = {prefixes}\n"
            );
            let file: FileConfig = toml::from_str(&text).unwrap();
            let refused = InstanceConfig::merge(&InstanceArgs::default(), &file).unwrap_err();
            assert!(format!("{refused:#}").contains("prefix"), "{prefixes}: {refused:#}");
        }
        let subject = |len: usize| -> FileConfig {
            let text = format!(
                "[[tokens]]\ntoken = \"0123456789abcdef\"\nsubject = \"{}\"\nscopes = [\"write\"]\n",
                "a".repeat(len)
            );
            toml::from_str(&text).unwrap()
        };
        assert!(InstanceConfig::merge(&InstanceArgs::default(), &subject(256)).is_ok());
        let long = InstanceConfig::merge(&InstanceArgs::default(), &subject(257)).unwrap_err();
        assert!(format!("{long:#}").contains("at most 256 bytes"), "{long:#}");
        let s3 = InstanceArgs { store: Some("s3://bucket/p".into()), ..InstanceArgs::default() };
        assert_eq!(
            InstanceConfig::merge(&s3, &FileConfig::default()).unwrap().uploads.max_blob_bytes,
            S3_MAX_BLOB_BYTES
        );
        let too_big: FileConfig = toml::from_str("[uploads]\nmax_blob_bytes = 6000000000\n").unwrap();
        assert!(InstanceConfig::merge(&s3, &too_big).is_err());
    }

    #[test]
    fn passwords_never_print() {
        let config = InstanceConfig {
            data: "d".into(),
            database: "postgres://app:hunter2@db/registry".into(),
            store: Location::File("b".into()),
            uploads: UploadLimits::default(),
            tokens: Vec::new(),
            gc_grace: std::time::Duration::ZERO,
            head_poll: std::time::Duration::from_millis(DEFAULT_HEAD_POLL_MS),
            connections: ConnectionLimits::default(),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/registry"));
    }
}
