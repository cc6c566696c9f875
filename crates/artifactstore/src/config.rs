//! Configuration: defaults, then an optional TOML file, then environment and flags.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _};
use artifactstore_db::redact_url;
use serde::Deserialize;

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
}

impl FileConfig {
    fn load(path: &Path) -> anyhow::Result<FileConfig> {
        let text = std::fs::read_to_string(path).with_context(|| format!("read config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parse config file {}", path.display()))
    }
}

/// Where the blobs live.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// A directory on the local filesystem.
    File(PathBuf),
}

impl StoreUrl {
    /// Parses `file:///PATH` (or a plain path).
    pub fn parse(url: &str) -> anyhow::Result<StoreUrl> {
        if let Some(path) = url.strip_prefix("file://") {
            if path.is_empty() {
                bail!("store URL `{url}` names no directory");
            }
            Ok(StoreUrl::File(PathBuf::from(path)))
        } else if url.starts_with("s3://") {
            bail!("store URL `{url}`: S3 stores are not supported by this build yet; use file:///PATH")
        } else if url.contains("://") {
            bail!("unsupported store URL `{url}`: use file:///PATH")
        } else {
            Ok(StoreUrl::File(PathBuf::from(url)))
        }
    }
}

impl std::fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::File(path) => write!(f, "file://{}", path.display()),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self}")
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
    pub store: StoreUrl,
}

impl std::fmt::Debug for InstanceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstanceConfig")
            .field("data", &self.data)
            .field("database", &redact_url(&self.database))
            .field("store", &self.store)
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
            Some(url) => StoreUrl::parse(url)?,
            None => StoreUrl::File(data.join("blobs")),
        };
        Ok(InstanceConfig { data, database, store })
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
        Ok(ServeConfig { instance, listen })
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
        assert_eq!(config.store, StoreUrl::File(PathBuf::from("./data/blobs")));
    }

    #[test]
    fn flags_override_the_file_which_overrides_defaults() {
        let file: FileConfig = toml::from_str("data = \"/srv/a\"\nstore = \"file:///srv/blobs\"\n").unwrap();
        let args = InstanceArgs { data: Some("/flag".into()), ..InstanceArgs::default() };
        let config = InstanceConfig::merge(&args, &file).unwrap();
        assert_eq!(config.data, PathBuf::from("/flag"));
        assert_eq!(config.database, "sqlite:///flag/artifactstore.db");
        assert_eq!(config.store, StoreUrl::File(PathBuf::from("/srv/blobs")));
    }

    #[test]
    fn unknown_file_keys_and_stores_are_refused() {
        assert!(toml::from_str::<FileConfig>("databse = \"x\"").is_err());
        assert!(StoreUrl::parse("ftp://x").is_err());
        assert!(StoreUrl::parse("file://").is_err());
    }

    #[test]
    fn passwords_never_print() {
        let config = InstanceConfig {
            data: "d".into(),
            database: "postgres://app:hunter2@db/registry".into(),
            store: StoreUrl::File("b".into()),
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://app:***@db/registry"));
    }
}
