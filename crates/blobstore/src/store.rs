//! `BlobStore`: blobs at their content address, read whole or by range.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore};

use crate::placement::{PlacementStats, Placer};
use crate::{Error, Location};

/// The registry's blob storage: one object per blob at `blobs/blake3/ab/cd/<hex>`, and staged uploads beside it.
/// Cheap to clone: a clone shares the client, the placer and the paths.
#[derive(Debug, Clone)]
pub struct BlobStore {
    pub(crate) backend: Backend,
    location: Arc<Location>,
}

#[derive(Debug, Clone)]
pub(crate) enum Backend {
    File { root: Arc<std::path::Path>, store: Arc<LocalFileSystem>, placer: Arc<Placer> },
    S3 { store: Arc<AmazonS3>, prefix: Arc<str> },
}

/// A byte stream read from the store.
pub type ByteStream = BoxStream<'static, Result<Bytes, Error>>;

impl BlobStore {
    /// Opens the store at `location`, creating the directory of a filesystem store.
    ///
    /// An S3 store takes its endpoint, region and credentials from the environment (`AWS_ENDPOINT_URL` or
    /// `AWS_ENDPOINT`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`, ...).
    pub fn open(location: &Location) -> Result<BlobStore, Error> {
        Self::open_with(location, &[])
    }

    /// As `open`, with `AWS_*` settings that take precedence over the process environment (for tests, and for
    /// several stores in one process).
    pub fn open_with(location: &Location, overrides: &[(String, String)]) -> Result<BlobStore, Error> {
        let backend = match location {
            Location::File(root) => {
                std::fs::create_dir_all(root)
                    .map_err(Error::io(format!("create the blob store directory {}", root.display())))?;
                let root = std::fs::canonicalize(root)
                    .map_err(Error::io(format!("resolve the blob store directory {}", root.display())))?;
                let store = LocalFileSystem::new_with_prefix(&root)?;
                let placer = Arc::new(Placer::start(&root)?);
                Backend::File { root: root.into(), store: Arc::new(store), placer }
            }
            Location::S3 { bucket, prefix } => {
                let mut builder = AmazonS3Builder::from_env();
                if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
                    builder = builder.with_endpoint(endpoint);
                }
                for (key, value) in overrides {
                    let key = key.to_ascii_lowercase();
                    if key == "aws_endpoint_url" {
                        builder = builder.with_endpoint(value);
                    } else if let Ok(key) = key.parse::<AmazonS3ConfigKey>() {
                        builder = builder.with_config(key, value);
                    }
                }
                let builder = builder.with_bucket_name(bucket);
                Backend::S3 { store: Arc::new(builder.build()?), prefix: prefix.as_str().into() }
            }
        };
        Ok(BlobStore { backend, location: Arc::new(location.clone()) })
    }

    /// Where the store lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// How many blobs a filesystem store has placed since it was opened, and in how many rounds of syncs (none on
    /// S3).
    pub fn placement_stats(&self) -> PlacementStats {
        match &self.backend {
            Backend::File { placer, .. } => placer.stats(),
            Backend::S3 { .. } => PlacementStats::default(),
        }
    }

    /// Whether this store keeps its bytes on S3.
    pub fn is_s3(&self) -> bool {
        matches!(self.backend, Backend::S3 { .. })
    }

    pub(crate) fn objects(&self) -> &dyn ObjectStore {
        match &self.backend {
            Backend::File { store, .. } => store.as_ref(),
            Backend::S3 { store, .. } => store.as_ref(),
        }
    }

    /// The object path of `relative` (a `/`-separated key below the store's root or prefix).
    pub(crate) fn key(&self, relative: &str) -> Path {
        match &self.backend {
            Backend::S3 { prefix, .. } if !prefix.is_empty() => Path::from(format!("{prefix}/{relative}")),
            _ => Path::from(relative),
        }
    }

    /// The content address of a blob, by the lowercase hex of its BLAKE3 digest.
    pub fn blob_key(blake3_hex: &str) -> String {
        let (a, b) = (&blake3_hex[..2.min(blake3_hex.len())], blake3_hex.get(2..4).unwrap_or(""));
        format!("blobs/blake3/{a}/{b}/{blake3_hex}")
    }

    /// Checks that the store answers: a lookup of an object that need not exist.
    pub async fn ready(&self) -> Result<(), Error> {
        match self.objects().head(&self.key("readyz-probe")).await {
            Ok(_) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// The stored length of a blob, or `None` when the store does not hold it.
    pub async fn size_of(&self, blake3_hex: &str) -> Result<Option<u64>, Error> {
        match self.objects().head(&self.key(&Self::blob_key(blake3_hex))).await {
            Ok(meta) => Ok(Some(meta.size)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(err) => Err(err.into()),
        }
    }

    /// Streams `range` of a blob (an empty range reads nothing and asks the store nothing).
    pub async fn read(&self, blake3_hex: &str, range: Range<u64>) -> Result<ByteStream, Error> {
        if range.is_empty() {
            return Ok(futures::stream::empty().boxed());
        }
        if let Backend::File { root, .. } = &self.backend {
            return read_file(root.join(Self::blob_key(blake3_hex)), blake3_hex, range).await;
        }
        let options = GetOptions { range: Some(GetRange::Bounded(range)), ..GetOptions::default() };
        let got = match self.objects().get_opts(&self.key(&Self::blob_key(blake3_hex)), options).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Err(Error::NotFound(blake3_hex.to_owned())),
            Err(err) => return Err(err.into()),
        };
        Ok(got.into_stream().map_err(Error::from).boxed())
    }

    /// Every blob the store holds, as (BLAKE3 hex, size), found by listing `blobs/blake3/`.
    pub async fn list_blobs(&self) -> Result<Vec<(String, u64)>, Error> {
        let prefix = self.key("blobs/blake3");
        let metas: Vec<object_store::ObjectMeta> = self.objects().list(Some(&prefix)).try_collect().await?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let name = meta.location.filename()?.to_owned();
                (name.len() == 64 && name.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
                    .then_some((name, meta.size))
            })
            .collect())
    }

    /// Streams a whole blob through both hash functions.
    pub async fn digest_of(&self, blake3_hex: &str, size: u64) -> Result<artifactstore_digest::DualDigest, Error> {
        if size == 0 {
            return match self.size_of(blake3_hex).await? {
                Some(_) => Ok(artifactstore_digest::DualDigest::of(&[])),
                None => Err(Error::NotFound(blake3_hex.to_owned())),
            };
        }
        let mut stream = self.read(blake3_hex, 0..size).await?;
        let mut hasher = artifactstore_digest::DualHasher::new();
        while let Some(chunk) = stream.try_next().await? {
            hasher.update(&chunk);
        }
        Ok(hasher.finalize())
    }

    /// Writes a small object (a snapshot, a manifest) at `relative`, durably, replacing what was there.
    pub async fn put_object(&self, relative: &str, bytes: Vec<u8>) -> Result<(), Error> {
        self.objects().put(&self.key(relative), object_store::PutPayload::from(bytes)).await?;
        Ok(())
    }

    /// Reads a whole small object.
    pub async fn get_object(&self, relative: &str) -> Result<Bytes, Error> {
        match self.objects().get(&self.key(relative)).await {
            Ok(got) => Ok(got.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound(relative.to_owned())),
            Err(err) => Err(err.into()),
        }
    }

    /// The names of the objects directly below `relative_dir`, sorted.
    pub async fn list_names(&self, relative_dir: &str) -> Result<Vec<String>, Error> {
        let prefix = self.key(relative_dir);
        let metas: Vec<object_store::ObjectMeta> = self.objects().list(Some(&prefix)).try_collect().await?;
        let mut names: Vec<String> = metas.iter().filter_map(|m| m.location.filename().map(str::to_owned)).collect();
        names.sort();
        Ok(names)
    }

    /// The names of the "directories" directly below `relative_dir`, sorted.
    pub async fn list_dirs(&self, relative_dir: &str) -> Result<Vec<String>, Error> {
        let listed = self.objects().list_with_delimiter(Some(&self.key(relative_dir))).await?;
        let mut names: Vec<String> =
            listed.common_prefixes.iter().filter_map(|p| p.filename().map(str::to_owned)).collect();
        names.sort();
        Ok(names)
    }

    /// Removes the bytes of several blobs (by BLAKE3 hex); a blob that is not there counts as removed. On a
    /// filesystem the unlinks run on a few blocking threads; on S3 they go out as bulk deletes.
    pub async fn remove_many(&self, blake3_hex: &[String]) -> Result<(), Error> {
        if let Backend::File { root, .. } = &self.backend {
            let per_thread = blake3_hex.len().div_ceil(UNLINK_THREADS).max(1);
            let mut unlinking = tokio::task::JoinSet::new();
            for chunk in blake3_hex.chunks(per_thread) {
                let paths: Vec<PathBuf> = chunk.iter().map(|hex| root.join(Self::blob_key(hex))).collect();
                unlinking.spawn_blocking(move || -> Result<(), Error> {
                    for path in paths {
                        match std::fs::remove_file(&path) {
                            Ok(()) => {}
                            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                            Err(err) => return Err(Error::io(format!("remove {}", path.display()))(err)),
                        }
                    }
                    Ok(())
                });
            }
            while let Some(done) = unlinking.join_next().await {
                done.map_err(|err| Error::io("an unlinking thread".to_owned())(std::io::Error::other(err)))??;
            }
            return Ok(());
        }
        let paths: Vec<Path> = blake3_hex.iter().map(|hex| self.key(&Self::blob_key(hex))).collect();
        let mut deleted = self.objects().delete_stream(futures::stream::iter(paths.into_iter().map(Ok)).boxed());
        while let Some(result) = deleted.next().await {
            match result {
                Ok(_) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Removes a blob's bytes; removing a blob that is not there succeeds.
    pub async fn remove(&self, blake3_hex: &str) -> Result<(), Error> {
        match self.objects().delete(&self.key(&Self::blob_key(blake3_hex))).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }
}

/// Blocking threads one `remove_many` unlinks on, each a share of the blobs.
const UNLINK_THREADS: usize = 4;

/// Bytes a filesystem read hands over at a time: large enough that a fast client costs few wake-ups, small enough
/// that a slow one holds little memory.
const FILE_READ_CHUNK: usize = 256 * 1024;

/// Streams `range` of a file straight from the filesystem, in `FILE_READ_CHUNK` pieces.
async fn read_file(path: PathBuf, blake3_hex: &str, range: Range<u64>) -> Result<ByteStream, Error> {
    use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
    let mut file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Err(Error::NotFound(blake3_hex.to_owned())),
        Err(err) => return Err(Error::io(format!("open {}", path.display()))(err)),
    };
    if range.start > 0 {
        file.seek(std::io::SeekFrom::Start(range.start))
            .await
            .map_err(Error::io(format!("seek in {}", path.display())))?;
    }
    let reader = file.take(range.end - range.start);
    let stream = tokio_util::io::ReaderStream::with_capacity(reader, FILE_READ_CHUNK);
    Ok(stream.map_err(move |err| Error::io(format!("read {}", path.display()))(err)).boxed())
}
