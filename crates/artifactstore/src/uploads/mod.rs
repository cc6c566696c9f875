//! Upload sessions: open, append at an offset, resume, commit with a digest, abort; free of HTTP.
//!
//! A session is a row of bookkeeping (offset, the hashers' saved state, where its bytes are staged) and the staged
//! bytes in the blob store. Each request that writes claims the row with a short lease, streams its body into the
//! store and both hashers, and saves the new state when the body is complete, giving the lease up in the same
//! statement. A request that breaks off saves nothing: the session stays at its last acknowledged offset, which its
//! status reports, and the next request overwrites whatever the broken one staged. Any instance can serve any
//! request of a session.
//!
//! A bare session (opened without declarations, on a filesystem store) has no row until its first bytes (ADR 0022):
//! its id carries a tag made with the instance's key (`SessionKey`), and until a request writes to it, it reads as
//! a row with nothing in it. A commit or abort of such a session leaves a closed mark until its id expires, so the id
//! cannot open again.
//!
//! - `session`: ids, rows, declarations and the checks a request passes;
//! - `store`: `SessionStore`, every statement on the session tables, and leases;
//! - `chunk`: a chunk's body into staging and the hashers;
//! - `commit`: the one commit path, for every route that ends an upload.
//!
//! The HTTP handlers (`api::uploads`) parse a request into these calls and their answers into responses.

mod chunk;
mod commit;
mod session;
mod store;
#[cfg(test)]
mod store_tests;

use std::time::Duration;

use artifactstore_blobstore::{BlobStore, StagingState};
use artifactstore_digest::Digest;
use artifactstore_eventlog::EventLog;
use uuid::Uuid;

pub(crate) use chunk::Incoming;
pub(crate) use commit::{Committed, Hold, Then};
pub(crate) use session::{parse_digest, ChunkStart, Declared};
pub(crate) use store::SessionStore;

use crate::auth::Caller;
use crate::config::UploadLimits;
use crate::instance::Instance;
use crate::problem::ApiError;
use crate::session_key::opened_ms;
use session::Session;
pub(crate) use session::SessionRef;
use store::Loaded;

/// Now, in Unix milliseconds.
pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The upload sessions of an instance.
#[derive(Debug, Clone)]
pub(crate) struct Uploads {
    instance: Instance,
    sessions: SessionStore,
    /// Sessions a commit without a lease is committing in this process (`commit::Committing`).
    committing: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<uuid::Uuid>>>,
}

/// A session just opened: its id and when it expires.
#[derive(Debug)]
pub(crate) struct Opened {
    pub(crate) id: String,
    pub(crate) expires_ms: i64,
}

/// Where a session stands.
#[derive(Debug)]
pub(crate) struct Status {
    pub(crate) offset: u64,
    pub(crate) expires_ms: i64,
    pub(crate) declared_size: Option<i64>,
}

impl Uploads {
    /// The sessions of `instance`.
    pub(crate) fn new(instance: Instance) -> Uploads {
        let limits = &instance.config.uploads;
        let sessions =
            SessionStore::new(instance.log.clone(), limits.max_open_sessions, limits.max_sessions_per_subject);
        Uploads { instance, sessions, committing: std::sync::Arc::default() }
    }

    fn limits(&self) -> &UploadLimits {
        &self.instance.config.uploads
    }

    fn blobs(&self) -> &BlobStore {
        &self.instance.store
    }

    fn log(&self) -> &EventLog {
        &self.instance.log
    }

    /// The statements on the session tables.
    pub(crate) fn sessions(&self) -> &SessionStore {
        &self.sessions
    }

    /// How long a session may sit idle, in milliseconds.
    fn idle_ms(&self) -> i64 {
        i64::try_from(self.limits().session_idle.as_millis()).unwrap_or(i64::MAX / 2)
    }

    /// When a bare session's id expires: the idle limit after its UUIDv7 was made.
    fn bare_expiry(&self, id: Uuid) -> Option<i64> {
        Some(opened_ms(id)?.saturating_add(self.idle_ms()))
    }

    /// The session an id names for `caller`: a plain UUID (a session with a row from its start), or a bare session's
    /// id whose tag is right for the caller. Another configured subject's bare session is forbidden, as any session
    /// of another subject is; anything else is not found.
    pub(crate) fn resolve(&self, caller: &Caller, text: &str) -> Result<SessionRef, ApiError> {
        let unknown = || ApiError::not_found(format!("no upload session `{text}`"));
        let key = &self.instance.session_key;
        let (id, bare) = key.read(text, caller.actor()).ok_or_else(|| {
            // A bare session's tag names its subject: tell another configured subject's session from a made-up id.
            let tokens = &self.instance.config.tokens;
            if tokens.iter().any(|token| token.subject() != caller.actor() && key.read(text, token.subject()).is_some())
            {
                ApiError::forbidden("this upload session belongs to another subject")
            } else {
                unknown()
            }
        })?;
        let bare_until = match bare {
            true => Some(self.bare_expiry(id).ok_or_else(unknown)?),
            false => None,
        };
        Ok(SessionRef { id, bare_until })
    }

    /// Opens a session with what the client declared. Without declarations on a filesystem store nothing is written
    /// until the first bytes (a bare session, ADR 0022).
    pub(crate) async fn open(&self, caller: &Caller, declared: Declared) -> Result<Opened, ApiError> {
        let declared = declared.check(self.limits())?;
        let s3 = self.blobs().is_s3();
        if !declared.any() && !s3 {
            let id = Uuid::now_v7();
            let expires_ms = self.bare_expiry(id).expect("a v7 UUID tells its time");
            return Ok(Opened { id: self.instance.session_key.sign(id, caller.actor()), expires_ms });
        }
        let now = now_ms();
        if s3 {
            // Staging on S3 starts a multipart upload: refuse before that when a limit is reached already.
            if let Some(refusal) = self.sessions.refusal(caller.actor(), now).await? {
                return Err(refusal);
            }
        }
        let id = Uuid::now_v7();
        let staging = self.blobs().stage_open(id).await?;
        let expires_ms = now + self.idle_ms();
        let row = Session {
            declared_size: declared.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            declared_blake3: declared.blake3.map(|d| d.to_string()),
            declared_sha256: declared.sha256.map(|d| d.to_string()),
            media_type: declared.media_type,
            staging: staging.to_json(),
            bare_until_ms: None,
            ..Session::bare(caller.actor(), expires_ms)
        };
        if !self.sessions.insert(id, now, row).await? {
            if let Err(err) = self.blobs().stage_abort(id, &staging).await {
                tracing::warn!(upload = %id, error = %err, "could not free the staging of a refused session");
            }
            return Err(self.sessions.refused(caller.actor(), now).await?);
        }
        Ok(Opened { id: id.to_string(), expires_ms })
    }

    /// Commits a whole blob that one request carries. Nothing can resume or join such an upload, so it keeps no
    /// session row: the bytes are staged, checked and committed at once, and a failure leaves nothing behind (a
    /// crash leaves staged bytes without a session, which the sweeper reclaims).
    pub(crate) async fn put_whole(
        &self,
        caller: &Caller,
        digest: Digest,
        incoming: Incoming,
    ) -> Result<Committed, ApiError> {
        self.commit_as(caller, Hold::OneRequest, digest, incoming, None).await
    }

    /// `put_whole`, then `then` in the transaction that records the blob.
    pub(crate) async fn put_whole_then(
        &self,
        caller: &Caller,
        digest: Digest,
        incoming: Incoming,
        then: Then,
    ) -> Result<Committed, ApiError> {
        self.commit_as(caller, Hold::OneRequest, digest, incoming, Some(then)).await
    }

    /// Where a session stands, for its owner.
    pub(crate) async fn status(&self, caller: &Caller, session: SessionRef) -> Result<Status, ApiError> {
        let Loaded { row, .. } = self.sessions.load(caller.actor(), session, now_ms()).await?;
        row.check_owner(caller.actor())?;
        Ok(Status { offset: row.offset(), expires_ms: row.expires_ms, declared_size: row.declared_size })
    }

    /// Appends one chunk at the session's offset; returns the new offset and expiry.
    pub(crate) async fn append(
        &self,
        caller: &Caller,
        session: SessionRef,
        incoming: Incoming,
    ) -> Result<Status, ApiError> {
        // A bare session's row is written only for a chunk that could be taken.
        let limits = self.limits();
        let start = incoming.start;
        let check = |row: &Session| row.check_chunk_start(limits, &start);
        let (mut lease, row) = self.sessions.claim(caller.actor(), session, check).await?;
        let written = async {
            row.check_owner(caller.actor())?;
            let chunk = self.receive(&row, session.id, incoming).await?.finish(true).await?;
            self.sessions.save(&mut lease, &chunk).await?;
            Ok::<_, ApiError>(Status { offset: chunk.offset, expires_ms: chunk.expires_ms, declared_size: None })
        }
        .await;
        // Released before answering (by the save itself when it happened), so the client's next request finds the
        // session free.
        lease.release().await;
        written
    }

    /// Appends an optional last chunk, then commits the session with `digest`.
    pub(crate) async fn commit(
        &self,
        caller: &Caller,
        session: SessionRef,
        digest: Digest,
        incoming: Incoming,
    ) -> Result<Committed, ApiError> {
        let Loaded { row, stored } = self.sessions.load(caller.actor(), session, now_ms()).await?;
        row.check_owner(caller.actor())?;
        let untouched = row.offset_bytes == 0 && !row.leased(now_ms());
        let hold = if untouched && StagingState::from_json(session.id, &row.staging)? == StagingState::File {
            Hold::Untouched { session, stored, row: Box::new(row) }
        } else {
            Hold::Leased(session)
        };
        self.commit_as(caller, hold, digest, incoming, None).await
    }

    /// Aborts the session and frees its staged bytes.
    pub(crate) async fn abort(&self, caller: &Caller, session: SessionRef) -> Result<(), ApiError> {
        if let Some(until) = session.bare_until {
            let loaded = self.sessions.load(caller.actor(), session, now_ms()).await?;
            // Nothing staged, nothing to free: the closed mark ends it, unless a request gave it a row meanwhile.
            if !loaded.stored && self.sessions.close_bare(session.id, until).await? {
                return Ok(());
            }
            // Closed meanwhile (the claim below says not found), or given a row: aborted as any session with one.
        }
        let (lease, row) = self.sessions.claim(caller.actor(), session, |_| Ok(())).await?;
        if let Err(err) = row.check_owner(caller.actor()) {
            lease.release().await;
            return Err(err);
        }
        lease.disarm();
        // The row first, then the staged bytes: a crash in between leaves bytes the sweeper reclaims.
        if let Some(staging) = self.sessions.delete(session).await? {
            let staging = StagingState::from_json(session.id, &staging)?;
            self.blobs().stage_abort(session.id, &staging).await?;
        }
        Ok(())
    }

    /// Deletes expired sessions (those no request holds) and frees their bytes; then frees staged bytes that no
    /// session owns and that have sat untouched for `orphan_age`. Returns how many sessions and orphans it
    /// reclaimed.
    pub(crate) async fn sweep(&self, orphan_age: Duration) -> Result<(u64, u64), ApiError> {
        let (expired, marks) = self.sessions.delete_expired(now_ms()).await?;
        if marks > 0 {
            tracing::debug!(marks, "swept the closed marks of expired bare sessions");
        }
        let mut sessions = 0;
        for (id, staging) in expired {
            match StagingState::from_json(id, &staging) {
                Ok(staging) => self.blobs().stage_abort(id, &staging).await?,
                Err(err) => tracing::warn!(session = %id, error = %err, "expired session with unreadable staging"),
            }
            sessions += 1;
        }
        let mut orphans = 0;
        let staged = self.blobs().staged().await?;
        let cutoff = std::time::SystemTime::now() - orphan_age;
        for object in staged.into_iter().filter(|o| o.modified < cutoff) {
            if !self.sessions.exists(object.session).await? {
                let state_guess = if self.blobs().is_s3() {
                    StagingState::S3 { upload_id: String::new(), parts: Vec::new(), pending_start: 0, pending_len: 0 }
                } else {
                    StagingState::File
                };
                self.blobs().stage_abort(object.session, &state_guess).await?;
                orphans += 1;
            }
        }
        Ok((sessions, orphans))
    }
}
