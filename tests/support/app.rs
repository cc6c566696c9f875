//! [`TestApp`]: the service started in-process on a loopback port, built one way for every test.

use std::ops::{Deref, DerefMut};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use artifactstore::auth::TokenConfig;
use artifactstore::config::{InstanceConfig, UploadLimits};
use artifactstore::instance::{connect_and_migrate, Instance};
use artifactstore::server::{AppState, Background};
use artifactstore_blobstore::Location;
use artifactstore_db::Backend;
use artifactstore_eventlog::{EventLog, NewEvent, SubjectKind};
use artifactstore_testkit::{S3Server, TestDb};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use uuid::Uuid;

use crate::Client;

/// Where blobs go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    /// A directory below the test's own.
    File,
    /// A bucket on an S3 server of the test's own (`moto_server`).
    S3,
}

/// The two setups a behaviour of the whole service runs on: SQLite with a filesystem store, PostgreSQL with S3.
pub const SETUPS: [(Backend, Store); 2] = [(Backend::Sqlite, Store::File), (Backend::Postgres, Store::S3)];

/// A running instance of the service on `127.0.0.1`, and requests to it (it derefs to its [`Client`]).
///
/// Its database is a fresh [`TestDb`] (dropped with the last app on it) unless the builder said otherwise; dropping
/// the app shuts its server down.
#[derive(Debug)]
pub struct TestApp {
    client: Client,
    /// `127.0.0.1:PORT`, for raw sockets.
    pub address: String,
    /// The instance the server serves: database, log, store and configuration, for checks in-process.
    pub instance: Instance,
    /// The instance's event log.
    pub log: EventLog,
    state: OnceLock<AppState>,
    stop: oneshot::Sender<()>,
    served: JoinHandle<std::io::Result<()>>,
    s3: Option<Arc<S3Server>>,
    overrides: Vec<(String, String)>,
    test_db: Option<Arc<TestDb>>,
}

/// How to start a [`TestApp`]: [`TestApp::builder`], options, then [`TestAppBuilder::start`].
pub struct TestAppBuilder {
    backend: Backend,
    store: Store,
    limits: Option<UploadLimits>,
    tokens: Option<Vec<TokenConfig>>,
    tweak: Option<Tweak>,
    background: Background,
    data: Option<PathBuf>,
    sibling: Option<Sibling>,
}

/// A change to the configuration, made last.
type Tweak = Box<dyn FnOnce(&mut InstanceConfig) + Send>;

/// What a second instance shares with the first: the database, the data directory and the store.
struct Sibling {
    test_db: Option<Arc<TestDb>>,
    config: Arc<InstanceConfig>,
    s3: Option<Arc<S3Server>>,
    overrides: Vec<(String, String)>,
}

impl std::fmt::Debug for TestAppBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAppBuilder")
            .field("backend", &self.backend)
            .field("store", &self.store)
            .field("limits", &self.limits)
            .field("tokens", &self.tokens.as_ref().map(Vec::len))
            .field("background", &self.background)
            .field("data", &self.data)
            .field("second instance", &self.sibling.is_some())
            .finish_non_exhaustive()
    }
}

impl TestApp {
    /// A builder with the defaults: SQLite, a filesystem store, default limits, no tokens, no background work.
    pub fn builder() -> TestAppBuilder {
        TestAppBuilder {
            backend: Backend::Sqlite,
            store: Store::File,
            limits: None,
            tokens: None,
            tweak: None,
            background: Background::default(),
            data: None,
            sibling: None,
        }
    }

    /// The defaults started: a fresh SQLite database and a filesystem store, which every machine has.
    pub async fn sqlite() -> TestApp {
        TestApp::builder().start().await.expect("SQLite and a filesystem store need nothing")
    }

    /// An [`AppState`] on this instance, for calls that take one in-process (the sweeper's `jobs::sweep`); made
    /// on first use, beside the server's own.
    pub fn state(&self) -> &AppState {
        self.state.get_or_init(|| AppState::new(self.instance.clone()))
    }

    /// The database the app was started on, when it is a [`TestDb`] (not a reopened data directory).
    pub fn test_db(&self) -> Option<&TestDb> {
        self.test_db.as_deref()
    }

    /// The S3 server of an app on [`Store::S3`].
    pub fn s3(&self) -> Option<&S3Server> {
        self.s3.as_deref()
    }

    /// The instance's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.instance.config.data
    }

    /// The head's sequence as this instance last knew it.
    pub fn head_sequence(&self) -> u64 {
        self.log.head().sequence
    }

    /// The head's sequence read from the database.
    pub async fn head_now(&self) -> u64 {
        self.log.read_head().await.unwrap().sequence
    }

    /// Appends `event` to the log directly (not over HTTP); returns its sequence.
    pub async fn append(&self, event: NewEvent) -> u64 {
        self.log.append(event).await.unwrap().sequence
    }

    /// Shuts the server down, waits until it has stopped and closes the database, so the data directory can be
    /// used by another process or reopened.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(Duration::from_secs(10), self.served).await {
            Ok(served) => served.expect("the server task").expect("the server"),
            Err(_) => panic!("the server did not shut down within 10 s"),
        }
        self.instance.db.close().await;
    }
}

impl Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl DerefMut for TestApp {
    fn deref_mut(&mut self) -> &mut Client {
        &mut self.client
    }
}

impl TestAppBuilder {
    /// The database backend of a fresh [`TestDb`] (default SQLite). PostgreSQL skips loudly when no server can be
    /// reached, and fails under `CI=true`.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }

    /// Where blobs go (default a directory). S3 skips loudly when `moto_server` cannot be started, and fails
    /// under `CI=true`.
    pub fn store(mut self, store: Store) -> Self {
        self.store = store;
        self
    }

    /// Upload limits (default `UploadLimits::default()`, or the first instance's for a second one).
    pub fn limits(mut self, limits: UploadLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Bearer tokens the instance accepts (default none, an open instance; or the first instance's for a second
    /// one).
    pub fn tokens(mut self, tokens: Vec<TokenConfig>) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Any other change to the configuration, made last, before the instance opens.
    pub fn config(mut self, tweak: impl FnOnce(&mut InstanceConfig) + Send + 'static) -> Self {
        self.tweak = Some(Box::new(tweak));
        self
    }

    /// Background work of the server: the broker relay, the archiver (default none).
    pub fn background(mut self, background: Background) -> Self {
        self.background = background;
        self
    }

    /// Opens the data directory `data` laid out as the binary lays it out (`data/artifactstore.db`, `data/blobs`),
    /// creating what is missing, instead of a fresh [`TestDb`]: to reopen an instance, or to share its data with
    /// the binary. SQLite only; the directory belongs to the caller.
    pub fn data_dir(mut self, data: &Path) -> Self {
        self.data = Some(data.to_path_buf());
        self
    }

    /// A second instance on `first`'s database (with a connection pool of its own, as another process would
    /// have), data directory and store.
    pub fn same_database_as(mut self, first: &TestApp) -> Self {
        self.sibling = Some(Sibling {
            test_db: first.test_db.clone(),
            config: first.instance.config.clone(),
            s3: first.s3.clone(),
            overrides: first.overrides.clone(),
        });
        self
    }

    /// Opens the database, the log and the store, and serves them on a free loopback port; `None` when
    /// PostgreSQL or S3 was asked for and cannot be had (outside CI).
    pub async fn start(self) -> Option<TestApp> {
        let TestAppBuilder { backend, store, limits, tokens, tweak, background, data, sibling } = self;
        let second = sibling.is_some();
        let (test_db, mut config, s3, overrides) = match sibling {
            Some(sibling) => (sibling.test_db, (*sibling.config).clone(), sibling.s3, sibling.overrides),
            None => {
                let test_db = match data {
                    Some(_) => None,
                    None => Some(Arc::new(TestDb::of(backend).await?)),
                };
                let (data, database) = match (data, &test_db) {
                    (_, Some(test_db)) => (test_db.dir().to_path_buf(), test_db.url.clone()),
                    (Some(data), None) => {
                        let database = format!("sqlite://{}", data.join("artifactstore.db").display());
                        (data, database)
                    }
                    (None, None) => unreachable!("a data directory or a test database"),
                };
                let (location, s3) = match store {
                    Store::File => (Location::File(data.join("blobs")), None),
                    Store::S3 => {
                        let server = S3Server::start().await?;
                        (Location::parse(&server.store_url()).unwrap(), Some(Arc::new(server)))
                    }
                };
                let overrides = s3.as_ref().map(|s3| s3.env()).unwrap_or_default();
                let (uploads, tokens) = (UploadLimits::default(), Vec::new());
                let gc_grace = artifactstore::config::GcFile::default().grace();
                let head_poll = std::time::Duration::from_millis(artifactstore::config::DEFAULT_HEAD_POLL_MS);
                let connections = artifactstore::config::ConnectionLimits::default();
                let config = InstanceConfig {
                    data,
                    database,
                    store: location,
                    uploads,
                    tokens,
                    gc_grace,
                    head_poll,
                    connections,
                };
                (test_db, config, s3, overrides)
            }
        };
        config.uploads = limits.unwrap_or(config.uploads);
        config.tokens = tokens.unwrap_or(config.tokens);
        if let Some(tweak) = tweak {
            tweak(&mut config);
        }
        let db = match &test_db {
            Some(test_db) if second => test_db.connect_again().await,
            Some(test_db) => test_db.db.clone(),
            None => connect_and_migrate(&config).await.expect("open the data directory's database"),
        };
        let instance = Instance::on_database(db, config, &overrides).await.unwrap();
        let log = instance.log.clone();

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (stop, stopped) = oneshot::channel::<()>();
        let served =
            tokio::spawn(artifactstore::server::serve_configured(listener, instance.clone(), background, async {
                let _ = stopped.await;
            }));
        Some(TestApp {
            client: Client::new(format!("http://{address}")),
            address,
            instance,
            log,
            state: OnceLock::new(),
            stop,
            served,
            s3,
            overrides,
            test_db,
        })
    }
}

/// A system event of type `event_type` by `tester`, about `subject` (if any), with `payload` as CBOR.
pub fn event(event_type: &str, subject: Option<u128>, payload: &impl serde::Serialize) -> NewEvent {
    NewEvent {
        event_type: event_type.into(),
        subject_kind: SubjectKind::System,
        subject_id: subject.map(Uuid::from_u128),
        actor: "tester".into(),
        payload: artifactstore_cbor::to_vec(payload).unwrap(),
    }
}
