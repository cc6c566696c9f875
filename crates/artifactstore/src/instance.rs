//! Opening an instance's data: database (migrated), event log and blob store.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use artifactstore_blobstore::BlobStore;
use artifactstore_db::{redact_url, Backend, ConnectOptions, Database};
use artifactstore_eventlog::{EventLog, LogOptions};

use crate::config::InstanceConfig;
use crate::session_key::SessionKey;

/// An instance's data, opened and migrated.
#[derive(Debug, Clone)]
pub struct Instance {
    /// The database.
    pub db: Database,
    /// The event log on it.
    pub log: EventLog,
    /// Where blobs live.
    pub store: BlobStore,
    /// How it was configured: limits and tokens.
    pub config: Arc<InstanceConfig>,
    /// Tags the ids of bare upload sessions (ADR 0022); the same for every instance on the database.
    pub session_key: SessionKey,
    /// Held by this process's lifecycle run (on PostgreSQL an advisory lock also keeps other instances out).
    pub lifecycle: Arc<tokio::sync::Mutex<()>>,
}

impl Instance {
    /// Creates what is missing (data directory, SQLite file, store directory), applies migrations and opens the log.
    pub async fn open(config: &InstanceConfig) -> anyhow::Result<Instance> {
        let db = connect_and_migrate(config).await?;
        Instance::on_database(db, config.clone(), &[]).await
    }

    /// An instance on a migrated database: its upload sessions' key (made if no instance has yet), its log, and its
    /// blob store opened (and created, on a filesystem) with `store_overrides` over the environment's S3 settings.
    pub async fn on_database(
        db: Database,
        config: InstanceConfig,
        store_overrides: &[(String, String)],
    ) -> anyhow::Result<Instance> {
        let session_key = SessionKey::load_or_create(&db).await?;
        let log = EventLog::open(db.clone(), LogOptions::default()).await.context("open the event log")?;
        let store = BlobStore::open_with(&config.store, store_overrides)
            .with_context(|| format!("open the blob store {}", config.store))?;
        if let Some(reason) = artifactstore_views::stale_reason(&mut db.acquire().await?).await? {
            if reason.starts_with("migration ") {
                tracing::info!(%reason, "rebuilding the views from the log");
                artifactstore_views::rebuild(&log, |_, _| {}).await.context("rebuild the views after a migration")?;
            }
        }
        let lifecycle = Arc::new(tokio::sync::Mutex::new(()));
        Ok(Instance { db, log, store, config: Arc::new(config), session_key, lifecycle })
    }
}

/// Opens the configured database and applies every pending migration.
pub async fn connect_and_migrate(config: &InstanceConfig) -> anyhow::Result<Database> {
    let shown = redact_url(&config.database);
    if Backend::from_url(&config.database)? == Backend::Sqlite {
        std::fs::create_dir_all(&config.data)
            .with_context(|| format!("create the data directory {}", config.data.display()))?;
        if let Some(parent) = sqlite_path(&config.database).and_then(|p| p.parent().map(Path::to_path_buf)) {
            if !parent.as_os_str().is_empty() {
                std::fs::create_dir_all(&parent)
                    .with_context(|| format!("create the database directory {}", parent.display()))?;
            }
        }
    }
    let db = Database::connect(&config.database, &ConnectOptions::default())
        .await
        .with_context(|| format!("open the database {shown}"))?;
    db.migrate().await.with_context(|| format!("migrate the database {shown}"))?;
    Ok(db)
}

fn sqlite_path(url: &str) -> Option<&Path> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next()?;
    (!path.is_empty() && path != ":memory:").then(|| Path::new(path))
}
