//! Freeing staged bytes: a session's abort (its file; or its multipart upload and every object under its prefix),
//! and the list of every session with bytes staged, from which orphans are reclaimed.

use std::time::SystemTime;

use futures::TryStreamExt;
use object_store::multipart::MultipartStore;
use object_store::path::Path;
use object_store::ObjectStore;
use uuid::Uuid;

use super::{StagedObject, StagingState};
use crate::store::Backend;
use crate::{BlobStore, Error};

impl BlobStore {
    /// Frees everything staged for a session; aborting twice, or a session with nothing staged, succeeds.
    pub async fn stage_abort(&self, session: Uuid, state: &StagingState) -> Result<(), Error> {
        match &self.backend {
            Backend::File { root, .. } => {
                let path = Self::staging_file(root, session);
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => Ok(()),
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(Error::Io { what: format!("remove {}", path.display()), source: err }),
                }
            }
            Backend::S3 { store, .. } => {
                let dir = self.staging_dir(session);
                if let StagingState::S3 { upload_id, .. } = state {
                    let data = self.key(&format!("{dir}/data"));
                    if let Err(err) = store.abort_multipart(&data, upload_id).await {
                        tracing::debug!(%session, error = %err, "aborting the multipart upload failed; it may be gone");
                    }
                }
                self.clear_prefix(&dir).await
            }
        }
    }

    pub(super) async fn clear_prefix(&self, dir: &str) -> Result<(), Error> {
        let store = self.objects();
        let prefix = self.key(dir);
        let keys: Vec<Path> = store.list(Some(&prefix)).map_ok(|meta| meta.location).try_collect().await?;
        for key in keys {
            match store.delete(&key).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(())
    }

    /// Every session that has bytes staged, with when they were last written, for reclaiming orphans.
    pub async fn staged(&self) -> Result<Vec<StagedObject>, Error> {
        let mut found: Vec<StagedObject> = Vec::new();
        match &self.backend {
            Backend::File { root, .. } => {
                let dir = root.join("staging");
                let mut entries = match tokio::fs::read_dir(&dir).await {
                    Ok(entries) => entries,
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(found),
                    Err(err) => return Err(Error::Io { what: format!("list {}", dir.display()), source: err }),
                };
                while let Some(entry) = entries.next_entry().await.map_err(Error::io("list the staging directory"))? {
                    let Some(session) = entry.file_name().to_str().and_then(|n| Uuid::parse_str(n).ok()) else {
                        continue;
                    };
                    let modified = entry
                        .metadata()
                        .await
                        .and_then(|m| m.modified())
                        .map_err(Error::io("inspect a staged file"))?;
                    found.push(StagedObject { session, modified });
                }
            }
            Backend::S3 { store, .. } => {
                let prefix = self.key("staging");
                let metas: Vec<_> = store.list(Some(&prefix)).try_collect().await?;
                for meta in metas {
                    let mut parts = meta.location.parts();
                    let Some(session) = parts
                        .find_map(|p| Uuid::parse_str(p.as_ref()).ok())
                        .filter(|_| meta.location.as_ref().contains("staging/"))
                    else {
                        continue;
                    };
                    let modified = SystemTime::from(meta.last_modified);
                    match found.iter_mut().find(|f| f.session == session) {
                        Some(f) => f.modified = f.modified.max(modified),
                        None => found.push(StagedObject { session, modified }),
                    }
                }
            }
        }
        Ok(found)
    }
}
