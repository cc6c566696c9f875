//! A session as requests see it: its id, its row, what the client declared, and the checks a request passes.

use artifactstore_blobstore::StagingState;
use artifactstore_digest::{Algorithm, Digest, DualDigest, DualHasher};
use serde::Deserialize;
use uuid::Uuid;

use crate::config::UploadLimits;
use crate::problem::ApiError;

/// A session a request names: its UUID, and for a bare session (ADR 0022) when its id expires.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SessionRef {
    pub(crate) id: Uuid,
    /// `Some` for a bare session: until when it lives without a row, and its closed mark once it ends.
    pub(crate) bare_until: Option<i64>,
}

/// A session's row: what a request needs to continue it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Session {
    pub(crate) actor: String,
    pub(crate) expires_ms: i64,
    pub(crate) offset_bytes: i64,
    pub(crate) declared_size: Option<i64>,
    pub(crate) declared_blake3: Option<String>,
    pub(crate) declared_sha256: Option<String>,
    pub(crate) media_type: Option<String>,
    pub(crate) hasher: Vec<u8>,
    pub(crate) staging: String,
    pub(crate) lease_until_ms: Option<i64>,
    /// Set on the row of a bare session (ADR 0022), to its id's expiry: the row answers only to the tagged id, and
    /// never expires before it.
    pub(crate) bare_until_ms: Option<i64>,
}

impl Session {
    /// What a bare session's row is until its first bytes: `actor`'s (the tag said so), empty, expiring with its id;
    /// with its declarations, staging and no bare expiry, the row of any new session.
    pub(crate) fn bare(actor: &str, until: i64) -> Session {
        Session {
            actor: actor.to_owned(),
            expires_ms: until,
            offset_bytes: 0,
            declared_size: None,
            declared_blake3: None,
            declared_sha256: None,
            media_type: None,
            hasher: DualHasher::new().save(),
            staging: StagingState::File.to_json(),
            lease_until_ms: None,
            bare_until_ms: Some(until),
        }
    }

    /// The empty row of a one-request upload: `actor`'s, never expiring, in a table of none.
    pub(crate) fn one_request(actor: &str, staging: &StagingState) -> Session {
        Session { staging: staging.to_json(), bare_until_ms: None, ..Session::bare(actor, i64::MAX) }
    }

    /// Whether a request holds the session now.
    pub(crate) fn leased(&self, now: i64) -> bool {
        self.lease_until_ms.is_some_and(|until| until >= now)
    }

    /// Its length so far.
    pub(crate) fn offset(&self) -> u64 {
        u64::try_from(self.offset_bytes).unwrap_or(0)
    }

    /// The most bytes it may reach: its declared size, or the largest blob.
    pub(crate) fn ceiling(&self, limits: &UploadLimits) -> u64 {
        self.declared_size.and_then(|s| u64::try_from(s).ok()).unwrap_or(limits.max_blob_bytes)
    }

    /// Refuses a request of `actor` on another subject's session.
    pub(crate) fn check_owner(&self, actor: &str) -> Result<(), ApiError> {
        if actor != self.actor {
            return Err(ApiError::forbidden("this upload session belongs to another subject"));
        }
        Ok(())
    }

    /// Refuses a chunk before its body is read: it does not start at the session's offset, or its length is over a
    /// limit.
    pub(crate) fn check_chunk_start(&self, limits: &UploadLimits, chunk: &ChunkStart) -> Result<(), ApiError> {
        let current = self.offset();
        if let Some(offset) = chunk.offset {
            if offset != current {
                return Err(ApiError::offset_mismatch(
                    current,
                    format!("the session is at offset {current}, not {offset}; send the bytes from {current}"),
                ));
            }
        }
        if let Some(length) = chunk.length {
            if length > limits.max_chunk_bytes {
                return Err(ApiError::too_large(format!(
                    "a chunk may carry at most {} bytes; this one has {length}",
                    limits.max_chunk_bytes
                )));
            }
            if current + length > self.ceiling(limits) {
                return Err(self.too_big(limits));
            }
        }
        Ok(())
    }

    /// The refusal of bytes past the session's ceiling.
    pub(crate) fn too_big(&self, limits: &UploadLimits) -> ApiError {
        match self.declared_size {
            Some(size) => ApiError::too_large(format!("the session declared {size} bytes; this chunk goes past them")),
            None => too_big_blob(limits.max_blob_bytes),
        }
    }

    /// Checks the bytes received against the digest the commit names and everything the session declared.
    pub(crate) fn check_digests(&self, digest: Digest, computed: &DualDigest) -> Result<(), ApiError> {
        let mismatch = |what: String| {
            ApiError::digest_mismatch(what)
                .with("blake3", computed.blake3.to_string())
                .with("sha256", computed.sha256.to_string())
                .with("size", computed.size)
        };
        let matches = |d: &Digest| match d.algorithm() {
            Algorithm::Blake3 => *d == computed.blake3,
            Algorithm::Sha256 => *d == computed.sha256,
        };
        if !matches(&digest) {
            return Err(mismatch(format!("the {} bytes received do not have digest {digest}", computed.size)));
        }
        for declared in [&self.declared_blake3, &self.declared_sha256].into_iter().flatten() {
            let declared = parse_digest(declared, "declared digest")?;
            if !matches(&declared) {
                return Err(mismatch(format!("the bytes received do not have the declared digest {declared}")));
            }
        }
        if let Some(size) = self.declared_size {
            if u64::try_from(size).ok() != Some(computed.size) {
                return Err(mismatch(format!("{} bytes were received but {size} were declared", computed.size)));
            }
        }
        Ok(())
    }
}

/// Where a chunk says it starts and how long it says it is, before its body is read.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct ChunkStart {
    /// The offset it must start at; `None` takes the session's.
    pub(crate) offset: Option<u64>,
    /// Its announced length, if any.
    pub(crate) length: Option<u64>,
}

/// What the client may declare when it opens a session.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Declared {
    pub(crate) size: Option<u64>,
    pub(crate) sha256: Option<String>,
    pub(crate) blake3: Option<String>,
    pub(crate) media_type: Option<String>,
}

/// `Declared`, checked.
#[derive(Debug, Default)]
pub(crate) struct Declarations {
    pub(crate) size: Option<u64>,
    pub(crate) blake3: Option<Digest>,
    pub(crate) sha256: Option<Digest>,
    pub(crate) media_type: Option<String>,
}

impl Declared {
    /// Checks each declaration on its own and against the limits.
    pub(crate) fn check(self, limits: &UploadLimits) -> Result<Declarations, ApiError> {
        let blake3 = self.blake3.as_deref().map(|d| parse_digest(d, "blake3")).transpose()?;
        let sha256 = self.sha256.as_deref().map(|d| parse_digest(d, "sha256")).transpose()?;
        if blake3.is_some_and(|d| d.algorithm() != Algorithm::Blake3) {
            return Err(ApiError::bad_request("blake3 must be a `blake3:` digest"));
        }
        if sha256.is_some_and(|d| d.algorithm() != Algorithm::Sha256) {
            return Err(ApiError::bad_request("sha256 must be a `sha256:` digest"));
        }
        if let Some(size) = self.size {
            if size > limits.max_blob_bytes {
                return Err(too_big_blob(limits.max_blob_bytes));
            }
        }
        if let Some(media_type) = &self.media_type {
            check_media_type(media_type)?;
        }
        Ok(Declarations { size: self.size, blake3, sha256, media_type: self.media_type })
    }
}

impl Declarations {
    /// Whether it declares anything at all.
    pub(crate) fn any(&self) -> bool {
        self.size.is_some() || self.blake3.is_some() || self.sha256.is_some() || self.media_type.is_some()
    }
}

/// Parses a digest the client sent as `what`.
pub(crate) fn parse_digest(text: &str, what: &str) -> Result<Digest, ApiError> {
    text.parse::<Digest>().map_err(|err| ApiError::bad_request(format!("{what}: {err}")))
}

fn check_media_type(media_type: &str) -> Result<(), ApiError> {
    crate::names::check_media_type(media_type).map_err(|err| ApiError::bad_request(format!("media_type: {err}")))
}

pub(crate) fn too_big_blob(max_blob: u64) -> ApiError {
    ApiError::too_large(format!("a blob may be at most {max_blob} bytes"))
}

pub(crate) fn too_many_sessions_of_subject(share: i64) -> ApiError {
    ApiError::too_many(
        "too_many_sessions",
        format!(
            "you hold {share} open upload sessions, the most one subject may; finish or abort some (or wait for idle \
             ones to expire)"
        ),
    )
}

pub(crate) fn too_many_sessions(most: i64) -> ApiError {
    ApiError::too_many(
        "too_many_sessions",
        format!(
            "{most} upload sessions are open, the most this instance allows; finish or abort some (or wait for idle \
             ones to expire)"
        ),
    )
}

pub(crate) fn busy() -> ApiError {
    ApiError::conflict("another request is writing to this upload session; retry when it is done")
}
