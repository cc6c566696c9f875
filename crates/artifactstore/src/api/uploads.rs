//! Upload sessions: open, append at an offset, resume, commit with a digest, abort.
//!
//! A session is a row of bookkeeping (offset, the hashers' saved state, where its bytes are staged) and the staged
//! bytes in the blob store. Each request that writes claims the row with a short lease, streams its body into the
//! store and both hashers, and saves the new state when the body is complete, giving the lease up in the same
//! statement (a commit that carries a whole blob to an untouched session on a filesystem store takes no lease: see
//! `commit_unclaimed`). A request that breaks off saves nothing: the session stays at its last acknowledged offset,
//! which `HEAD` reports, and the next request overwrites whatever the broken one staged. Any instance can serve any
//! request of a session.
//!
//! A bare session (opened without declarations, on a filesystem store) has no row until its first bytes (ADR 0022):
//! its id carries a tag made with the instance's key (`SessionKey`), and until a request writes to it, it reads as
//! a row with nothing in it. A commit or abort of such a session leaves a closed mark until its id expires, so the id
//! cannot open again.

use std::time::Duration;

use artifactstore_blobstore::{BlobStore, Placed, StageWriter, StagingState};
use artifactstore_db::{execute, fetch_one, fetch_optional, sqlx};
use artifactstore_digest::{Algorithm, Digest, DualDigest, DualHasher};
use artifactstore_eventlog::{EventLog, Refused};
use artifactstore_views::vocab::{FileIngested, RegistryEvent};
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::body::{broken_body, read_small_body, BodyFormat};
use super::extract::{ApiPath, ApiQuery};
use crate::auth::{Caller, Scope};
use crate::problem::ApiError;
use crate::server::AppState;
use crate::session_key::opened_ms;

/// How long a writing request holds its session before another request may take it over.
const LEASE: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, sqlx::FromRow)]
struct SessionRow {
    actor: String,
    expires_ms: i64,
    offset_bytes: i64,
    declared_size: Option<i64>,
    declared_blake3: Option<String>,
    declared_sha256: Option<String>,
    media_type: Option<String>,
    hasher: Vec<u8>,
    staging: String,
    lease_until_ms: Option<i64>,
    /// Set on the row of a bare session (ADR 0022), to its id's expiry: the row answers only to the tagged id, and
    /// never expires before it.
    bare_until_ms: Option<i64>,
}

impl SessionRow {
    /// Whether a request holds the session now.
    fn leased(&self, now: i64) -> bool {
        self.lease_until_ms.is_some_and(|until| until >= now)
    }
}

/// What the client may declare when it opens a session.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Declared {
    size: Option<u64>,
    sha256: Option<String>,
    blake3: Option<String>,
    media_type: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommitQuery {
    digest: Option<String>,
}

pub(crate) fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn rfc3339_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn parse_digest(text: &str, what: &str) -> Result<Digest, ApiError> {
    text.parse::<Digest>().map_err(|err| ApiError::bad_request(format!("{what}: {err}")))
}

/// A session a request names: its UUID, and for a bare session (ADR 0022) when its id expires.
#[derive(Debug, Clone, Copy)]
struct SessionRef {
    id: Uuid,
    /// `Some` for a bare session: until when it lives without a row, and its closed mark once it ends.
    bare_until: Option<i64>,
}

/// The session an id names for `caller`: a plain UUID (a session with a row from its start), or a bare session's
/// id whose tag is right for the caller. Another configured subject's bare session is forbidden, as any session of
/// another subject is; anything else is not found.
fn parse_session_id(state: &AppState, caller: &Caller, text: &str) -> Result<SessionRef, ApiError> {
    let unknown = || ApiError::not_found(format!("no upload session `{text}`"));
    let key = &state.instance.session_key;
    let (id, bare) = key.read(text, caller.actor()).ok_or_else(|| {
        // A bare session's tag names its subject: tell another configured subject's session from a made-up id.
        let tokens = &state.instance.config.tokens;
        if tokens.iter().any(|token| token.subject() != caller.actor() && key.read(text, token.subject()).is_some()) {
            ApiError::forbidden("this upload session belongs to another subject")
        } else {
            unknown()
        }
    })?;
    let bare_until = match bare {
        true => Some(bare_expiry(state, id).ok_or_else(unknown)?),
        false => None,
    };
    Ok(SessionRef { id, bare_until })
}

/// When a bare session's id expires: the idle limit after its UUIDv7 was made.
fn bare_expiry(state: &AppState, id: Uuid) -> Option<i64> {
    Some(opened_ms(id)?.saturating_add(idle_ms(state)))
}

/// How long a session may sit idle, in milliseconds.
fn idle_ms(state: &AppState) -> i64 {
    i64::try_from(state.instance.config.uploads.session_idle.as_millis()).unwrap_or(i64::MAX / 2)
}

/// The answer to a session's opening.
fn opened(id: &str, expires_ms: i64) -> Response {
    let location = format!("/v1/uploads/{id}");
    let mut response =
        (StatusCode::CREATED, axum::Json(json!({"id": id, "offset": 0, "expires_at": rfc3339_ms(expires_ms)})))
            .into_response();
    let headers = response.headers_mut();
    headers.insert(header::LOCATION, header_value(&location));
    headers.insert("upload-offset", HeaderValue::from(0));
    headers.insert("upload-expires", header_value(&rfc3339_ms(expires_ms)));
    response
}

/// `POST /v1/uploads`: opens a session; with `?digest=`, the body is the whole blob and is committed at once.
pub(crate) async fn open(
    State(state): State<AppState>,
    caller: Caller,
    ApiQuery(query): ApiQuery<CommitQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Write)?;
    let limits = &state.instance.config.uploads;
    let (parts, body) = request.into_parts();
    let commit_digest = query.digest.as_deref().map(|d| parse_digest(d, "digest")).transpose()?;
    let mut blob_body = None;
    let declared = if commit_digest.is_some() {
        blob_body = Some(body);
        Declared::default()
    } else {
        let format = BodyFormat::of(&parts.headers)?;
        let bytes = read_small_body(body, 64 * 1024).await?;
        if bytes.is_empty() {
            Declared::default()
        } else {
            format.decode::<Declared>(&bytes)?
        }
    };
    let declared_blake3 = declared.blake3.as_deref().map(|d| parse_digest(d, "blake3")).transpose()?;
    let declared_sha256 = declared.sha256.as_deref().map(|d| parse_digest(d, "sha256")).transpose()?;
    if declared_blake3.is_some_and(|d| d.algorithm() != Algorithm::Blake3) {
        return Err(ApiError::bad_request("blake3 must be a `blake3:` digest"));
    }
    if declared_sha256.is_some_and(|d| d.algorithm() != Algorithm::Sha256) {
        return Err(ApiError::bad_request("sha256 must be a `sha256:` digest"));
    }
    if let Some(size) = declared.size {
        if size > limits.max_blob_bytes {
            return Err(too_big_blob(limits.max_blob_bytes));
        }
    }
    if let Some(media_type) = &declared.media_type {
        check_media_type(media_type)?;
    }
    if let Some(digest) = commit_digest {
        let body = blob_body.take().expect("kept above");
        return commit_direct(&state, &caller, digest, &parts.headers, body).await;
    }
    let declares = declared.size.is_some()
        || declared_blake3.is_some()
        || declared_sha256.is_some()
        || declared.media_type.is_some();
    if !declares && !state.instance.store.is_s3() {
        // Bare: nothing to keep until the first bytes, so nothing is written (ADR 0022).
        let id = Uuid::now_v7();
        let expires_ms = bare_expiry(&state, id).expect("a v7 UUID tells its time");
        return Ok(opened(&state.instance.session_key.sign(id, caller.actor()), expires_ms));
    }
    let now = now_ms();
    let most = i64::try_from(limits.max_open_sessions).unwrap_or(i64::MAX);
    if state.instance.store.is_s3() {
        // Staging on S3 starts a multipart upload: refuse before that when the limit is reached already.
        let mut conn = state.instance.db.acquire().await?;
        let (open,): (i64,) =
            fetch_one!(&mut conn, (i64,), "SELECT COUNT(*) FROM upload_sessions WHERE expires_ms > $1", now)?;
        if open >= most {
            return Err(too_many_sessions(most));
        }
    }
    let id = Uuid::now_v7();
    let staging = state.instance.store.stage_open(id).await?;
    let expires_ms = now + idle_ms(&state);
    {
        let actor = caller.actor().to_owned();
        let declared_size = declared.size.map(|s| i64::try_from(s).unwrap_or(i64::MAX));
        let (declared_blake3, declared_sha256) =
            (declared_blake3.map(|d| d.to_string()), declared_sha256.map(|d| d.to_string()));
        let media_type = declared.media_type.clone();
        let staging_state = staging.clone();
        let staging = staging.to_json();
        // The limit is checked by the statement that opens the session: on SQLite, where every write goes through
        // the committer, concurrent opens cannot overshoot it; on PostgreSQL they can, by the few that race.
        let opened = write(&state.instance.log, move |tx| {
            Box::pin(async move {
                execute!(
                    tx,
                    "INSERT INTO upload_sessions (id, actor, created_ms, expires_ms, offset_bytes, declared_size, \
                     declared_blake3, declared_sha256, media_type, hasher, staging) \
                     SELECT $1, $2, $3, $4, 0, $5, $6, $7, $8, $9, $10 \
                     WHERE (SELECT COUNT(*) FROM upload_sessions WHERE expires_ms > $3) < $11",
                    id,
                    actor,
                    now,
                    expires_ms,
                    declared_size,
                    declared_blake3,
                    declared_sha256,
                    media_type,
                    DualHasher::new().save(),
                    staging,
                    most,
                )
            })
        })
        .await?;
        if opened == 0 {
            if let Err(err) = state.instance.store.stage_abort(id, &staging_state).await {
                tracing::warn!(upload = %id, error = %err, "could not free the staging of a refused session");
            }
            return Err(too_many_sessions(most));
        }
    }
    Ok(opened(&id.to_string(), expires_ms))
}

/// `POST /v1/uploads?digest=`: the body is the whole blob. Nothing can resume or join such an upload, so it keeps
/// no session row: the bytes are staged, checked and committed in this one request, and a failure leaves nothing
/// behind (a crash leaves staged bytes without a session, which the sweeper reclaims).
async fn commit_direct(
    state: &AppState,
    caller: &Caller,
    digest: Digest,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let id = Uuid::now_v7();
    let staging = state.instance.store.stage_open(id).await?;
    // An empty row of the caller's that never expires and that no table holds.
    let row = SessionRow { staging: staging.to_json(), bare_until_ms: None, ..bare_row(caller, i64::MAX) };
    commit_in_own_staging(state, caller, id, staging, &row, Some(0), digest, headers, body, Claim::NoRow).await
}

/// Stages a request's whole blob under `own`, a staging no session row names, checks it against `digest` and
/// `row`'s declarations, and places and records it ending `claim`; on any failure the staged bytes are freed. On a
/// mismatch, an unclaimed session keeps the bytes as its first chunk, as any commit's last chunk is kept.
#[allow(clippy::too_many_arguments)]
async fn commit_in_own_staging(
    state: &AppState,
    caller: &Caller,
    own: Uuid,
    staging: StagingState,
    row: &SessionRow,
    offset: Option<u64>,
    digest: Digest,
    headers: &HeaderMap,
    body: Body,
    claim: Claim,
) -> Result<Response, ApiError> {
    let result = async {
        let mut received = receive_chunk(state, row, own, offset, headers, body).await?;
        let computed = received.digest().await?;
        if let Err(mismatch) = check_digests(row, digest, &computed) {
            if let (Claim::Unclaimed(session) | Claim::Bare(session), true) = (&claim, received.writer.is_some()) {
                // The bytes were never acknowledged: if they cannot be kept, the client still learns its digest
                // was wrong and sends them again.
                let kept = match received.finish(false).await {
                    Ok(chunk) => keep_unclaimed_chunk(state, caller, *session, own, &chunk).await,
                    Err(err) => Err(err),
                };
                if let Err(err) = kept {
                    tracing::info!(upload = %session.id, error = ?err, "the bytes of a mismatched commit were not kept");
                }
            }
            return Err(mismatch);
        }
        let placed = received.place(&state.instance.store, own, &computed).await?;
        record_blob(state, caller, own, claim, placed, row.media_type.clone(), computed).await
    }
    .await;
    if result.is_err() {
        if let Err(err) = state.instance.store.stage_abort(own, &staging).await {
            tracing::warn!(upload = %own, error = %err, "could not free the bytes of a failed commit");
        }
    }
    result
}

/// `HEAD /v1/uploads/{id}`: where to resume.
pub(crate) async fn status(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Write)?;
    let session = parse_session_id(&state, &caller, &id)?;
    let Loaded { row, .. } = load(&state, &caller, session).await?;
    check_owner(&caller, &row)?;
    let mut response = StatusCode::NO_CONTENT.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(row.offset_bytes));
    headers.insert("upload-expires", header_value(&rfc3339_ms(row.expires_ms)));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Some(size) = row.declared_size {
        headers.insert("upload-length", HeaderValue::from(size));
    }
    Ok(response)
}

/// `PATCH /v1/uploads/{id}`: appends one chunk at the session's offset.
pub(crate) async fn append(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Write)?;
    let session = parse_session_id(&state, &caller, &id)?;
    let id = session.id;
    let (parts, body) = request.into_parts();
    let offset = requested_offset(&parts.headers)?
        .ok_or_else(|| ApiError::bad_request("a chunk needs `Upload-Offset: N` or `Content-Range: bytes N-M/*`"))?;
    // A bare session's row is written only for a chunk that could be taken.
    let check = |row: &SessionRow| check_chunk_start(&state, row, Some(offset), &parts.headers);
    let (mut lease, row) = Lease::claim_checked(&state, &caller, session, check).await?;
    let written = match check_owner(&caller, &row) {
        Ok(()) => match receive_chunk(&state, &row, id, Some(offset), &parts.headers, body).await {
            Ok(received) => match received.finish(true).await {
                Ok(chunk) => save_chunk(&state, &mut lease, &chunk).await.map(|()| (chunk.offset, chunk.expires_ms)),
                Err(err) => Err(err),
            },
            Err(err) => Err(err),
        },
        Err(err) => Err(err),
    };
    // Released before answering (by the save itself when it happened), so the client's next request finds the
    // session free.
    lease.release().await;
    let (offset, expires_ms) = written?;
    let mut response = StatusCode::ACCEPTED.into_response();
    let headers = response.headers_mut();
    headers.insert("upload-offset", HeaderValue::from(offset));
    headers.insert("upload-expires", header_value(&rfc3339_ms(expires_ms)));
    Ok(response)
}

/// `PUT /v1/uploads/{id}?digest=`: appends an optional last chunk, then commits.
pub(crate) async fn commit(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<CommitQuery>,
    request: Request,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Write)?;
    let session = parse_session_id(&state, &caller, &id)?;
    let digest = query
        .digest
        .as_deref()
        .map(|d| parse_digest(d, "digest"))
        .transpose()?
        .ok_or_else(|| ApiError::bad_request("commit needs `?digest=blake3:<hex>` or `?digest=sha256:<hex>`"))?;
    let (parts, body) = request.into_parts();
    let offset = requested_offset(&parts.headers)?;
    let Loaded { row, stored } = load(&state, &caller, session).await?;
    check_owner(&caller, &row)?;
    let fresh = row.offset_bytes == 0 && !row.leased(now_ms());
    if fresh && StagingState::from_json(session.id, &row.staging)? == StagingState::File {
        let claim = if stored { Claim::Unclaimed(session) } else { Claim::Bare(session) };
        return commit_unclaimed(&state, &caller, row, offset, digest, &parts.headers, body, claim).await;
    }
    commit_session(&state, &caller, session, offset, digest, Some(body)).await
}

/// A commit that carries the whole blob, on a session with nothing staged that no request holds (the common
/// `POST` + `PUT` of a small blob), on a filesystem store: it takes no lease, which would cost a durable write of
/// its own. Its bytes go to a staging file of their own, so a concurrent request on the same session cannot mix
/// with them, and the transaction that records the blob deletes the session only if it is still unclaimed and
/// empty; otherwise the commit fails with a conflict and changes nothing (the placed bytes are content-addressed
/// and harmless). If the digest does not match, the chunk is kept in the session as any commit's would be. A bare
/// session without a row (`Claim::Bare`) is ended by its closed mark instead, written only if no row appeared.
#[allow(clippy::too_many_arguments)]
async fn commit_unclaimed(
    state: &AppState,
    caller: &Caller,
    row: SessionRow,
    offset: Option<u64>,
    digest: Digest,
    headers: &HeaderMap,
    body: Body,
    claim: Claim,
) -> Result<Response, ApiError> {
    let (own, staging) = (Uuid::now_v7(), StagingState::File);
    commit_in_own_staging(state, caller, own, staging, &row, offset, digest, headers, body, claim).await
}

/// Moves a chunk staged by an unclaimed commit into its session, under a lease, as the session's first bytes.
async fn keep_unclaimed_chunk(
    state: &AppState,
    caller: &Caller,
    session: SessionRef,
    own: Uuid,
    chunk: &Chunk,
) -> Result<(), ApiError> {
    let (mut lease, row) = Lease::claim(state, caller, session).await?;
    let kept = async {
        if row.offset_bytes != 0 {
            return Err(ApiError::conflict("another request wrote to this upload session meanwhile"));
        }
        state.instance.store.stage_move(own, session.id).await?;
        save_chunk(state, &mut lease, chunk).await
    }
    .await;
    lease.release().await;
    kept
}

/// `DELETE /v1/uploads/{id}`: aborts the session and frees its staged bytes.
pub(crate) async fn abort(
    State(state): State<AppState>,
    caller: Caller,
    ApiPath(id): ApiPath<String>,
) -> Result<Response, ApiError> {
    caller.require_any(Scope::Write)?;
    let session = parse_session_id(&state, &caller, &id)?;
    if let Some(until) = session.bare_until {
        if !load(&state, &caller, session).await?.stored {
            // Nothing staged, nothing to free: the closed mark ends it, unless a request gave it a row meanwhile.
            let id = session.id;
            let closed = write(&state.instance.log, move |tx| {
                Box::pin(async move {
                    lock_bare(tx, id).await?;
                    close_bare(tx, id, until).await
                })
            })
            .await?;
            if closed {
                return Ok(StatusCode::NO_CONTENT.into_response());
            }
            // Closed meanwhile (the claim below says not found), or given a row: aborted as any session with one.
        }
    }
    let (lease, row) = Lease::claim(&state, &caller, session).await?;
    if let Err(err) = check_owner(&caller, &row) {
        lease.release().await;
        return Err(err);
    }
    lease.disarm();
    abort_session(&state, session).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Deletes a session's row (leaving a bare session's closed mark), then its staged bytes (a crash in between leaves
/// bytes the sweeper reclaims).
async fn abort_session(state: &AppState, session: SessionRef) -> Result<(), ApiError> {
    let SessionRef { id, bare_until } = session;
    let staging: Option<(String,)> = state
        .instance
        .log
        .transact(move |wtx| {
            Box::pin(async move {
                if bare_until.is_some() {
                    lock_bare(wtx.tx(), id).await?;
                }
                let staging = fetch_optional!(
                    wtx.tx(),
                    (String,),
                    "DELETE FROM upload_sessions WHERE id = $1 RETURNING staging",
                    id
                )?;
                if let Some(until) = bare_until {
                    close_bare(wtx.tx(), id, until).await?;
                }
                Ok::<_, ApiError>(staging)
            })
        })
        .await?;
    if let Some((staging,)) = staging {
        let staging = StagingState::from_json(id, &staging)?;
        state.instance.store.stage_abort(id, &staging).await?;
    }
    Ok(())
}

/// On PostgreSQL, makes the writes that decide a bare session's fate (its row's creation, its closing) take turns
/// for one id until the transaction ends: under read committed each would otherwise miss the other's uncommitted
/// row, and a session could be both closed and written to. On SQLite the committer serialises every write already.
async fn lock_bare(tx: &mut artifactstore_db::Tx, id: Uuid) -> Result<(), sqlx::Error> {
    if tx.backend() == artifactstore_db::Backend::Postgres {
        let bytes: [u8; 8] = id.as_bytes()[8..].try_into().expect("a UUID has 16 bytes");
        execute!(tx, "SELECT pg_advisory_xact_lock($1)", i64::from_le_bytes(bytes))?;
    }
    Ok(())
}

/// The statement that leaves a bare session's closed mark (`$1` its id, `$2` its id's expiry), unless it has a row
/// (another request wrote one, or the same transaction has yet to delete it) or a mark already.
macro_rules! close_bare_sql {
    () => {
        "INSERT INTO upload_sessions_closed (id, until_ms) SELECT $1, $2 \
         WHERE NOT EXISTS (SELECT 1 FROM upload_sessions WHERE id = $1) ON CONFLICT (id) DO NOTHING"
    };
}

/// Leaves a bare session's closed mark, until its id expires; says whether it wrote one.
async fn close_bare(tx: &mut artifactstore_db::Tx, id: Uuid, until: i64) -> Result<bool, sqlx::Error> {
    Ok(execute!(tx, close_bare_sql!(), id, until)? > 0)
}

async fn commit_session(
    state: &AppState,
    caller: &Caller,
    session: SessionRef,
    offset: Option<u64>,
    digest: Digest,
    body: Option<Body>,
) -> Result<Response, ApiError> {
    let (mut lease, row) = Lease::claim(state, caller, session).await?;
    match commit_claimed(state, caller, &mut lease, session, row, offset, digest, body).await {
        Ok(response) => {
            lease.disarm();
            Ok(response)
        }
        Err(err) => {
            lease.release().await;
            Err(err)
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn commit_claimed(
    state: &AppState,
    caller: &Caller,
    lease: &mut Lease,
    session: SessionRef,
    row: SessionRow,
    offset: Option<u64>,
    digest: Digest,
    body: Option<Body>,
) -> Result<Response, ApiError> {
    let id = lease.id;
    check_owner(caller, &row)?;
    // A last chunk riding on the commit is made durable and recorded only if the commit does not happen; when it
    // does, the staged file is synced as it moves to its content address.
    let mut received = match body {
        Some(body) => receive_chunk(state, &row, id, offset, &HeaderMap::new(), body).await?,
        None => Received {
            offset: u64::try_from(row.offset_bytes).unwrap_or(0),
            expires_ms: row.expires_ms,
            hashing: Hashing::new(DualHasher::restore(&row.hasher).map_err(|err| ApiError::internal(&err))?),
            staging: StagingState::from_json(id, &row.staging)?,
            writer: None,
        },
    };
    let computed = received.digest().await?;
    if let Err(mismatch) = check_digests(&row, digest, &computed) {
        if received.writer.is_some() {
            let chunk = received.finish(true).await?;
            save_chunk(state, lease, &chunk).await?;
        }
        return Err(mismatch);
    }
    let placed = received.place(&state.instance.store, id, &computed).await?;
    record_blob(state, caller, id, Claim::Leased(session), placed, row.media_type.clone(), computed).await
}

/// How a commit holds the session it ends.
#[derive(Clone, Copy)]
enum Claim {
    /// It holds the session's lease.
    Leased(SessionRef),
    /// It holds no lease: the session must still be empty and unclaimed when it ends.
    Unclaimed(SessionRef),
    /// A bare session without a row: none may have appeared when it ends, nor a closed mark.
    Bare(SessionRef),
    /// There is no session (a one-request upload).
    NoRow,
}

impl Claim {
    /// The bare session the commit ends, if it is one: its UUID and its id's expiry.
    fn bare(self) -> Option<(Uuid, i64)> {
        match self {
            Claim::Leased(session) | Claim::Unclaimed(session) | Claim::Bare(session) => {
                Some((session.id, session.bare_until?))
            }
            Claim::NoRow => None,
        }
    }
}

/// The end of every commit, once the bytes are at their content address (`Received::place`): one transaction
/// deletes the session's row (if it has one) and records `v1.file.ingested` (if new).
async fn record_blob(
    state: &AppState,
    caller: &Caller,
    id: Uuid,
    claim: Claim,
    placed: Placed,
    media_type: Option<String>,
    computed: DualDigest,
) -> Result<Response, ApiError> {
    tracing::debug!(session = %id, blob = %computed.blake3, ?placed, "staged bytes placed");
    let event = RegistryEvent::FileIngested(FileIngested {
        blake3: computed.blake3.to_string(),
        sha256: computed.sha256.to_string(),
        size: computed.size,
        media_type,
    });
    let actor = caller.actor().to_owned();
    // Unfenced: every statement here either succeeds or undoes itself, and the work knows whether it deleted the
    // session before failing, so it needs no savepoint of its own in its group.
    let logged = state
        .instance
        .log
        .transact_unfenced(move |wtx| {
            Box::pin(async move {
                let RegistryEvent::FileIngested(payload) = &event else { unreachable!("built above") };
                let blake3 = payload.blake3.as_str();
                if let Some((id, _)) = claim.bare() {
                    lock_bare(wtx.tx(), id).await.map_err(Refused::statement)?;
                }
                // Deleting the session also says whether the views know the blob already (one round trip).
                let deleted = match claim {
                    Claim::Leased(session) => fetch_optional!(
                        wtx.tx(),
                        (i64,),
                        "DELETE FROM upload_sessions WHERE id = $1 \
                         RETURNING (SELECT COUNT(*) FROM artifact_files WHERE blake3 = $2)",
                        session.id,
                        blake3
                    )
                    .map_err(Refused::statement)?,
                    Claim::Unclaimed(session) => {
                        let deleted = fetch_optional!(
                            wtx.tx(),
                            (i64,),
                            "DELETE FROM upload_sessions WHERE id = $1 AND offset_bytes = 0 AND expires_ms > $2 \
                             AND (lease IS NULL OR lease_until_ms < $2) \
                             RETURNING (SELECT COUNT(*) FROM artifact_files WHERE blake3 = $3)",
                            session.id,
                            now_ms(),
                            blake3
                        )
                        .map_err(Refused::statement)?;
                        if deleted.is_none() {
                            return Err(Refused::Cleanly(ApiError::conflict(
                                "another request wrote to this upload session meanwhile, or it expired; ask HEAD for \
                                 its offset",
                            )));
                        }
                        deleted
                    }
                    Claim::Bare(session) => {
                        // The closed mark ends the session (one statement, as a row's deletion would).
                        let closed = fetch_optional!(
                            wtx.tx(),
                            (i64,),
                            concat!(
                                close_bare_sql!(),
                                " RETURNING (SELECT COUNT(*) FROM artifact_files WHERE blake3 = $3)"
                            ),
                            session.id,
                            session.bare_until.unwrap_or(i64::MAX),
                            blake3
                        )
                        .map_err(Refused::statement)?;
                        if closed.is_none() {
                            return Err(Refused::Cleanly(ApiError::conflict(
                                "this upload session was committed or aborted meanwhile, or another request wrote to \
                                 it; ask HEAD for its offset",
                            )));
                        }
                        closed
                    }
                    Claim::NoRow => None,
                };
                // From here on a failure leaves the deleted session (or the closed mark) behind, if there was one.
                let wrote = deleted.is_some();
                if let (Claim::Leased(_) | Claim::Unclaimed(_), Some((id, until))) = (claim, claim.bare()) {
                    close_bare(wtx.tx(), id, until).await.map_err(|err| Refused::AfterWriting(ApiError::from(err)))?;
                }
                let known = match deleted {
                    Some((count,)) => count > 0,
                    None => fetch_optional!(
                        wtx.tx(),
                        (String,),
                        "SELECT blake3 FROM artifact_files WHERE blake3 = $1",
                        blake3
                    )
                    // A read: whatever went wrong, it changed nothing.
                    .map_err(|err| Refused::Cleanly(ApiError::from(err)))?
                    .is_some(),
                };
                if known {
                    return Ok(None);
                }
                let appended = artifactstore_views::record(wtx, &actor, &event).await.map_err(|err| {
                    if !wrote && record_left_nothing(&err) {
                        Refused::Cleanly(ApiError::from(err))
                    } else {
                        Refused::AfterWriting(ApiError::from(err))
                    }
                })?;
                Ok(Some(appended.sequence))
            })
        })
        .await?;
    let status = if logged.is_some() { StatusCode::CREATED } else { StatusCode::OK };
    Ok(blob_created(status, &computed, logged))
}

/// Whether a failed `record` of `v1.file.ingested` left nothing behind: its event was refused before any
/// statement ran, or the one statement its plan has (the blob's row) was refused and undid itself.
fn record_left_nothing(err: &artifactstore_views::Error) -> bool {
    use artifactstore_views::Error;
    matches!(err, Error::Database(sqlx::Error::Database(_)) | Error::Log(_) | Error::BadPayload { .. })
}

fn blob_created(status: StatusCode, digest: &DualDigest, sequence: Option<u64>) -> Response {
    let mut body = json!({
        "blake3": digest.blake3.to_string(),
        "sha256": digest.sha256.to_string(),
        "size": digest.size,
    });
    if let Some(sequence) = sequence {
        body["sequence"] = json!(sequence);
    }
    let mut response = (status, axum::Json(body)).into_response();
    response.headers_mut().insert(header::LOCATION, header_value(&format!("/v1/blobs/{}", digest.blake3)));
    response
}

fn check_digests(row: &SessionRow, digest: Digest, computed: &DualDigest) -> Result<(), ApiError> {
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
    for declared in [&row.declared_blake3, &row.declared_sha256].into_iter().flatten() {
        let declared = parse_digest(declared, "declared digest")?;
        if !matches(&declared) {
            return Err(mismatch(format!("the bytes received do not have the declared digest {declared}")));
        }
    }
    if let Some(size) = row.declared_size {
        if u64::try_from(size).ok() != Some(computed.size) {
            return Err(mismatch(format!("{} bytes were received but {size} were declared", computed.size)));
        }
    }
    Ok(())
}

/// Refuses a chunk before its body is read: it does not start at the session's offset, or its `Content-Length` is
/// over a limit.
fn check_chunk_start(
    state: &AppState,
    row: &SessionRow,
    offset: Option<u64>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let limits = &state.instance.config.uploads;
    let current = u64::try_from(row.offset_bytes).unwrap_or(0);
    if let Some(offset) = offset {
        if offset != current {
            return Err(ApiError::offset_mismatch(
                current,
                format!("the session is at offset {current}, not {offset}; send the bytes from {current}"),
            ));
        }
    }
    let ceiling = row.declared_size.and_then(|s| u64::try_from(s).ok()).unwrap_or(limits.max_blob_bytes);
    if let Some(length) = content_length(headers)? {
        if length > limits.max_chunk_bytes {
            return Err(ApiError::too_large(format!(
                "a chunk may carry at most {} bytes; this one has {length}",
                limits.max_chunk_bytes
            )));
        }
        if current + length > ceiling {
            return Err(too_big(row, limits.max_blob_bytes));
        }
    }
    Ok(())
}

/// Streams `body` into the session's staging and hashers at `offset`; the caller ends the chunk, to save it
/// (`Received::finish`) or to commit (`Received::digest`, then `Received::place`).
async fn receive_chunk(
    state: &AppState,
    row: &SessionRow,
    id: Uuid,
    offset: Option<u64>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Received, ApiError> {
    let limits = &state.instance.config.uploads;
    let current = u64::try_from(row.offset_bytes).unwrap_or(0);
    check_chunk_start(state, row, offset, headers)?;
    let ceiling = row.declared_size.and_then(|s| u64::try_from(s).ok()).unwrap_or(limits.max_blob_bytes);
    let staging = StagingState::from_json(id, &row.staging)?;
    let mut hashing = Hashing::new(DualHasher::restore(&row.hasher).map_err(|err| ApiError::internal(&err))?);
    let mut writer = None;
    let mut stream = body.into_data_stream();
    let mut received: u64 = 0;
    while let Some(frame) = stream.next().await {
        let frame = frame.map_err(|err| broken_body(&err))?;
        if frame.is_empty() {
            continue;
        }
        received += frame.len() as u64;
        if received > limits.max_chunk_bytes {
            return Err(ApiError::too_large(format!("a chunk may carry at most {} bytes", limits.max_chunk_bytes)));
        }
        if current + received > ceiling {
            return Err(too_big(row, limits.max_blob_bytes));
        }
        if writer.is_none() {
            writer = Some(state.instance.store.stage_writer(id, &staging, current).await?);
        }
        hashing.update(frame.clone()).await;
        writer.as_mut().expect("opened above").write(frame).await?;
    }
    // A bare session's row never expires before its id (whose time another instance's clock gave), so the sweeper,
    // which deletes rows without closed marks, cannot let the id open again.
    let expires_ms = (now_ms() + idle_ms(state)).max(row.bare_until_ms.unwrap_or(i64::MIN));
    Ok(Received { offset: current + received, expires_ms, hashing, staging, writer })
}

/// A chunk streamed into staging, whose last frames may still be being hashed and written; not yet ended.
struct Received {
    /// The session's length with the chunk.
    offset: u64,
    expires_ms: i64,
    hashing: Hashing,
    /// The session's staging before the chunk.
    staging: StagingState,
    /// Holds the chunk's bytes; `None` when it carried none.
    writer: Option<StageWriter>,
}

impl Received {
    /// The digests of the session's bytes with the chunk, once the hashing has taken in its last frames: a commit
    /// needs them before it places the bytes.
    async fn digest(&mut self) -> Result<DualDigest, ApiError> {
        Ok(self.hashing.settle().await?.clone().finalize())
    }

    /// Ends the chunk (with `durable`, it survives a crash once this returns) for the session row to record: the
    /// hashing of its last frames and the sync of its bytes at once, where one after the other would leave the disk
    /// idle while the hashing finishes.
    async fn finish(self, durable: bool) -> Result<Chunk, ApiError> {
        let Received { offset, expires_ms, hashing, staging, writer } = self;
        let ended = async move {
            match writer {
                Some(writer) => Ok::<_, ApiError>(writer.finish(durable).await?),
                None => Ok(staging),
            }
        };
        let (hasher, staging) = tokio::try_join!(hashing.finish(), ended)?;
        Ok(Chunk { offset, expires_ms, hasher, staging })
    }

    /// Ends the chunk and puts everything staged at the blob's content address, durably (unless the store holds it
    /// already): bytes first, so a blob is durable at its address before the event that names it commits. On a
    /// filesystem the rename and its syncs are a round of the store's placing thread, shared with every placement
    /// queued meanwhile (ADR 0020).
    async fn place(self, store: &BlobStore, id: Uuid, computed: &DualDigest) -> Result<Placed, ApiError> {
        let blake3_hex = computed.blake3.hex();
        Ok(match self.writer {
            Some(writer) => store.commit_writer(writer, &blake3_hex).await?,
            None => store.stage_commit(id, &self.staging, &blake3_hex, computed.size).await?,
        })
    }
}

/// A session's state after a chunk was staged and ended, for its row to record.
struct Chunk {
    offset: u64,
    expires_ms: i64,
    hasher: DualHasher,
    staging: StagingState,
}

/// Records a staged chunk in the session row and gives the lease up in the same statement (one durable write where
/// a save and a release would be two), if the lease still holds it. Once the statement ran, `lease` holds nothing.
async fn save_chunk(state: &AppState, lease: &mut Lease, chunk: &Chunk) -> Result<(), ApiError> {
    let (id, token) = (lease.id, lease.token);
    let (offset, hasher, staging, expires_ms) = (
        i64::try_from(chunk.offset).unwrap_or(i64::MAX),
        chunk.hasher.save(),
        chunk.staging.to_json(),
        chunk.expires_ms,
    );
    let saved = write(&state.instance.log, move |tx| {
        Box::pin(async move {
            execute!(
                tx,
                "UPDATE upload_sessions SET offset_bytes = $2, hasher = $3, staging = $4, expires_ms = $5, \
                 lease = NULL, lease_until_ms = NULL WHERE id = $1 AND lease = $6",
                id,
                offset,
                hasher,
                staging,
                expires_ms,
                token,
            )
        })
    })
    .await?;
    // Saved and released, or the lease was no longer ours: there is nothing left to release either way.
    lease.armed = false;
    if saved == 0 {
        return Err(ApiError::conflict("another request took this session over; ask HEAD for its offset"));
    }
    Ok(())
}

/// Runs one statement's worth of session bookkeeping. On SQLite it goes through the log's committer, grouped with
/// other writes (without a savepoint: the one statement undoes itself if it fails), so writers never contend for
/// the one write lock (and sleep in SQLite's busy handler). On
/// PostgreSQL rows lock one by one, so it runs in a transaction of its own and never waits for the log's head.
async fn write<T, F>(log: &EventLog, work: F) -> Result<T, ApiError>
where
    F: for<'a> FnOnce(&'a mut artifactstore_db::Tx) -> futures::future::BoxFuture<'a, Result<T, sqlx::Error>>
        + Send
        + 'static,
    T: Send + 'static,
{
    let db = log.database();
    if db.backend() == artifactstore_db::Backend::Postgres {
        let mut tx = db.begin_write().await?;
        let value = work(&mut tx).await?;
        tx.commit().await?;
        return Ok(value);
    }
    log.transact_statement(work).await.map_err(|err| match err {
        artifactstore_eventlog::Error::Database(err) => ApiError::from(err),
        other => ApiError::from(other),
    })
}

/// A long chunk is hashed in batches of this many bytes...
const HASH_BATCH: usize = 1024 * 1024;
/// ... of which at most this many wait for the hashing.
const HASH_QUEUE: usize = 8;

/// Hashes a chunk's frames as they arrive: a chunk shorter than `HASH_BATCH` on the request's own thread at its
/// end, a longer one by a task of its own that hashes whatever batches are queued on a blocking thread, again and
/// again, while the request goes on receiving (and staging) the next frames, so receiving, hashing and writing
/// overlap instead of taking turns. The task holds no blocking thread while it waits for bytes.
struct Hashing {
    /// `None` once the task has it.
    hasher: Option<DualHasher>,
    pending: Vec<bytes::Bytes>,
    pending_len: usize,
    task: Option<HashTask>,
}

/// The task behind `Hashing` (`hash_behind`) and its queue.
struct HashTask {
    batches: tokio::sync::mpsc::Sender<Vec<bytes::Bytes>>,
    done: tokio::task::JoinHandle<Option<DualHasher>>,
}

impl Hashing {
    fn new(hasher: DualHasher) -> Hashing {
        Hashing { hasher: Some(hasher), pending: Vec::new(), pending_len: 0, task: None }
    }

    /// Queues the next frame; waits only when `HASH_QUEUE` batches wait for the task.
    async fn update(&mut self, frame: bytes::Bytes) {
        self.pending_len += frame.len();
        self.pending.push(frame);
        if self.pending_len >= HASH_BATCH {
            self.send_pending().await;
        }
    }

    async fn send_pending(&mut self) {
        let batch = std::mem::take(&mut self.pending);
        self.pending_len = 0;
        let hasher = &mut self.hasher;
        let HashTask { batches, .. } = self.task.get_or_insert_with(|| {
            let (batches, queue) = tokio::sync::mpsc::channel::<Vec<bytes::Bytes>>(HASH_QUEUE);
            let hasher = hasher.take().expect("the task starts once");
            HashTask { batches, done: tokio::spawn(hash_behind(hasher, queue)) }
        });
        // The task stops early only if hashing panicked, which `settle` reports.
        let _ = batches.send(batch).await;
    }

    /// Waits until every frame queued so far is hashed; the hasher is then at hand, and `finish` returns at once.
    async fn settle(&mut self) -> Result<&DualHasher, ApiError> {
        if self.task.is_none() {
            let hasher = self.hasher.as_mut().expect("no task took it");
            hasher.update_all(&self.pending);
        } else {
            if self.pending_len > 0 {
                self.send_pending().await;
            }
            let HashTask { batches, done } = self.task.take().expect("checked above");
            drop(batches);
            self.hasher = Some(match done.await {
                Ok(Some(hasher)) => hasher,
                Ok(None) => return Err(ApiError::internal(&"hashing a chunk failed")),
                Err(err) => return Err(ApiError::internal(&err)),
            });
        }
        self.pending.clear();
        self.pending_len = 0;
        Ok(self.hasher.as_ref().expect("settled above"))
    }

    /// The hasher, with every frame fed to it.
    async fn finish(mut self) -> Result<DualHasher, ApiError> {
        self.settle().await?;
        Ok(self.hasher.take().expect("settled"))
    }
}

/// The task behind `Hashing`: feeds whatever batches are queued to the hasher in one call on a blocking thread,
/// until the queue closes. `None` if hashing panicked.
async fn hash_behind(
    mut hasher: DualHasher,
    mut queue: tokio::sync::mpsc::Receiver<Vec<bytes::Bytes>>,
) -> Option<DualHasher> {
    while let Some(first) = queue.recv().await {
        let mut frames = first;
        while let Ok(more) = queue.try_recv() {
            frames.extend(more);
        }
        hasher = tokio::task::spawn_blocking(move || {
            hasher.update_all(&frames);
            hasher
        })
        .await
        .ok()?;
    }
    Some(hasher)
}

fn too_many_sessions(most: i64) -> ApiError {
    ApiError::too_many(
        "too_many_sessions",
        format!(
            "{most} upload sessions are open, the most this instance allows; finish or abort some (or wait for idle \
             ones to expire)"
        ),
    )
}

fn too_big(row: &SessionRow, max_blob: u64) -> ApiError {
    match row.declared_size {
        Some(size) => ApiError::too_large(format!("the session declared {size} bytes; this chunk goes past them")),
        None => too_big_blob(max_blob),
    }
}

fn too_big_blob(max_blob: u64) -> ApiError {
    ApiError::too_large(format!("a blob may be at most {max_blob} bytes"))
}

fn content_length(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    headers
        .get(header::CONTENT_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request("Content-Length is not a number"))
        })
        .transpose()
}

/// The offset a chunk says it starts at: `Upload-Offset: N`, or `Content-Range: bytes N-M/*`.
fn requested_offset(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    if let Some(value) = headers.get("upload-offset") {
        let offset = value
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .ok_or_else(|| ApiError::bad_request("Upload-Offset must be a non-negative integer"))?;
        return Ok(Some(offset));
    }
    if let Some(value) = headers.get(header::CONTENT_RANGE) {
        let bad = || ApiError::bad_request("Content-Range must look like `bytes N-M/*` or `bytes N-M/TOTAL`");
        let text = value.to_str().map_err(|_| bad())?.trim();
        let range = text.strip_prefix("bytes ").ok_or_else(bad)?;
        let (span, _total) = range.split_once('/').ok_or_else(bad)?;
        let (first, last) = span.split_once('-').ok_or_else(bad)?;
        let first: u64 = first.parse().map_err(|_| bad())?;
        let last: u64 = last.parse().map_err(|_| bad())?;
        if last < first {
            return Err(bad());
        }
        if let Some(length) = content_length(headers)? {
            if length != last - first + 1 {
                return Err(ApiError::bad_request("Content-Range and Content-Length disagree"));
            }
        }
        return Ok(Some(first));
    }
    Ok(None)
}

fn check_owner(caller: &Caller, row: &SessionRow) -> Result<(), ApiError> {
    if caller.actor() != row.actor {
        return Err(ApiError::forbidden("this upload session belongs to another subject"));
    }
    Ok(())
}

fn check_media_type(media_type: &str) -> Result<(), ApiError> {
    let valid = !media_type.is_empty()
        && media_type.len() <= 255
        && media_type.contains('/')
        && media_type.bytes().all(|b| b.is_ascii_graphic() || b == b' ');
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!("media_type `{media_type}` is not a media type")))
    }
}

fn header_value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// The columns of `SessionRow`, in a statement that reads or returns one.
macro_rules! session_columns {
    () => {
        "actor, expires_ms, offset_bytes, declared_size, declared_blake3, declared_sha256, media_type, hasher, \
         staging, lease_until_ms, bare_until_ms"
    };
}

fn busy() -> ApiError {
    ApiError::conflict("another request is writing to this upload session; retry when it is done")
}

/// A session's row as a request finds it.
struct Loaded {
    row: SessionRow,
    /// False for a bare session without a row yet: `row` is then what its row would be.
    stored: bool,
}

async fn load(state: &AppState, caller: &Caller, session: SessionRef) -> Result<Loaded, ApiError> {
    let id = session.id;
    let mut conn = state.instance.db.acquire().await?;
    if let Some(until) = session.bare_until {
        // Usually without a row: one read says whether it has one, or a closed mark.
        let (has_row, closed): (bool, bool) = fetch_one!(
            &mut conn,
            (bool, bool),
            "SELECT EXISTS (SELECT 1 FROM upload_sessions WHERE id = $1), \
             EXISTS (SELECT 1 FROM upload_sessions_closed WHERE id = $1)",
            id
        )?;
        if closed && !has_row {
            return Err(ApiError::not_found(format!("upload session {id} was committed or aborted")));
        }
        if !has_row {
            if until <= now_ms() {
                return Err(ApiError::not_found(format!("upload session {id} has expired")));
            }
            return Ok(Loaded { row: bare_row(caller, until), stored: false });
        }
    }
    let row = fetch_optional!(
        &mut conn,
        SessionRow,
        concat!("SELECT ", session_columns!(), " FROM upload_sessions WHERE id = $1"),
        id
    )?;
    let expired = || ApiError::not_found(format!("upload session {id} has expired"));
    match row {
        // A bare session's row is reached only through its tagged id.
        Some(row) if row.bare_until_ms.is_some() && session.bare_until.is_none() => {
            Err(ApiError::not_found(format!("no upload session {id}")))
        }
        Some(row) if row.expires_ms > now_ms() => Ok(Loaded { row, stored: true }),
        Some(_) => Err(expired()),
        // Gone between the two reads of a bare session, or never there.
        None => Err(ApiError::not_found(format!("no upload session {id}"))),
    }
}

/// What a bare session's row is until its first bytes: the caller's (the tag said so), empty, expiring with its id.
fn bare_row(caller: &Caller, until: i64) -> SessionRow {
    SessionRow {
        actor: caller.actor().to_owned(),
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

/// A claim on a session for one writing request, released when dropped.
#[derive(Debug)]
struct Lease {
    log: EventLog,
    id: Uuid,
    token: Uuid,
    /// Whether the row may still hold this lease (false once a save gave it up or the row is gone).
    armed: bool,
}

impl Lease {
    /// Claims the session and reads its row in the same statement; a bare session without a row gets its row,
    /// claimed, if the open sessions' limit allows one more.
    async fn claim(state: &AppState, caller: &Caller, session: SessionRef) -> Result<(Lease, SessionRow), ApiError> {
        Lease::claim_checked(state, caller, session, |_| Ok(())).await
    }

    /// `claim`, where a bare session without a row gets one only if `check` takes its empty row.
    async fn claim_checked(
        state: &AppState,
        caller: &Caller,
        session: SessionRef,
        check: impl FnOnce(&SessionRow) -> Result<(), ApiError>,
    ) -> Result<(Lease, SessionRow), ApiError> {
        let id = session.id;
        let token = Uuid::new_v4();
        let now = now_ms();
        let until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX / 2);
        let bare_without_row = match session.bare_until {
            Some(bare_until) => {
                let loaded = load(state, caller, session).await?;
                if !loaded.stored {
                    check(&loaded.row)?;
                }
                (!loaded.stored).then_some(bare_until)
            }
            None => None,
        };
        let claimed = match bare_without_row {
            Some(bare_until) => Lease::claim_bare(state, caller, session, bare_until, token, until).await?,
            None => {
                write(&state.instance.log, move |tx| {
                    Box::pin(async move {
                        fetch_optional!(
                            tx,
                            SessionRow,
                            concat!(
                                "UPDATE upload_sessions SET lease = $2, lease_until_ms = $3 \
                                 WHERE id = $1 AND expires_ms > $4 AND (lease IS NULL OR lease_until_ms < $4) \
                                 AND (bare_until_ms IS NULL OR $5) \
                                 RETURNING ",
                                session_columns!()
                            ),
                            id,
                            token,
                            until,
                            now,
                            session.bare_until.is_some(),
                        )
                    })
                })
                .await?
            }
        };
        if let Some(row) = claimed {
            return Ok((Lease { log: state.instance.log.clone(), id, token, armed: true }, row));
        }
        // Tell a missing, expired or closed session apart from a busy one, and a bare one the limit kept out.
        if !load(state, caller, session).await?.stored {
            let most = i64::try_from(state.instance.config.uploads.max_open_sessions).unwrap_or(i64::MAX);
            return Err(too_many_sessions(most));
        }
        Err(busy())
    }

    /// Writes a bare session's row, claimed by `token` until `until`, unless the session was closed or another
    /// request wrote its row meanwhile, or the open sessions' limit is reached.
    async fn claim_bare(
        state: &AppState,
        caller: &Caller,
        session: SessionRef,
        bare_until: i64,
        token: Uuid,
        until: i64,
    ) -> Result<Option<SessionRow>, ApiError> {
        let id = session.id;
        let row = bare_row(caller, bare_until);
        let most = i64::try_from(state.instance.config.uploads.max_open_sessions).unwrap_or(i64::MAX);
        let now = now_ms();
        let opened = opened_ms(id).unwrap_or(now);
        let claimed = write(&state.instance.log, move |tx| {
            Box::pin(async move {
                lock_bare(tx, id).await?;
                fetch_optional!(
                    tx,
                    SessionRow,
                    concat!(
                        "INSERT INTO upload_sessions (id, actor, created_ms, expires_ms, offset_bytes, hasher, \
                         staging, lease, lease_until_ms, bare_until_ms) \
                         SELECT $1, $2, $3, $4, 0, $5, $6, $7, $8, $4 \
                         WHERE $4 > $9 AND NOT EXISTS (SELECT 1 FROM upload_sessions_closed WHERE id = $1) \
                         AND (SELECT COUNT(*) FROM upload_sessions WHERE expires_ms > $9) < $10 \
                         ON CONFLICT (id) DO NOTHING RETURNING ",
                        session_columns!()
                    ),
                    id,
                    row.actor,
                    opened,
                    row.expires_ms,
                    row.hasher,
                    row.staging,
                    token,
                    until,
                    now,
                    most,
                )
            })
        })
        .await?;
        Ok(claimed)
    }

    /// Gives the lease up, unless a save already did.
    async fn release(mut self) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        if let Err(err) = release(&self.log, self.id, self.token).await {
            tracing::warn!(session = %self.id, error = ?err, "could not release an upload lease");
        }
    }

    /// The session row is gone (committed or aborted); nothing to release.
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            let (log, id, token) = (self.log.clone(), self.id, self.token);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = release(&log, id, token).await {
                        tracing::warn!(session = %id, error = ?err, "could not release an upload lease");
                    }
                });
            }
        }
    }
}

async fn release(log: &EventLog, id: Uuid, token: Uuid) -> Result<(), ApiError> {
    write(log, move |tx| {
        Box::pin(async move {
            execute!(
                tx,
                "UPDATE upload_sessions SET lease = NULL, lease_until_ms = NULL WHERE id = $1 AND lease = $2",
                id,
                token
            )
        })
    })
    .await?;
    Ok(())
}

/// Deletes expired sessions (those no request holds) and frees their bytes; then frees staged bytes that no
/// session owns and that have sat untouched for `orphan_age`. Returns how many sessions and orphans it reclaimed.
pub async fn sweep(state: &AppState, orphan_age: Duration) -> Result<(u64, u64), ApiError> {
    let now = now_ms();
    let expired: Vec<(Uuid, String)> = write(&state.instance.log, move |tx| {
        Box::pin(async move {
            artifactstore_db::fetch_all!(
                tx,
                (Uuid, String),
                "DELETE FROM upload_sessions WHERE expires_ms <= $1 AND (lease IS NULL OR lease_until_ms < $1) \
                 RETURNING id, staging",
                now
            )
        })
    })
    .await?;
    // Closed marks outlive nothing: once a bare session's id has expired, it names no session anyway.
    let marks = write(&state.instance.log, move |tx| {
        Box::pin(async move { execute!(tx, "DELETE FROM upload_sessions_closed WHERE until_ms <= $1", now) })
    })
    .await?;
    if marks > 0 {
        tracing::debug!(marks, "swept the closed marks of expired bare sessions");
    }
    let mut sessions = 0;
    for (id, staging) in expired {
        match StagingState::from_json(id, &staging) {
            Ok(staging) => state.instance.store.stage_abort(id, &staging).await?,
            Err(err) => tracing::warn!(session = %id, error = %err, "expired session with unreadable staging"),
        }
        sessions += 1;
    }
    let mut orphans = 0;
    let staged = state.instance.store.staged().await?;
    let cutoff = std::time::SystemTime::now() - orphan_age;
    for object in staged.into_iter().filter(|o| o.modified < cutoff) {
        let live = {
            let mut conn = state.instance.db.acquire().await?;
            fetch_optional!(
                &mut conn,
                (i64,),
                "SELECT offset_bytes FROM upload_sessions WHERE id = $1",
                object.session
            )?
        };
        if live.is_none() {
            let state_guess = if state.instance.store.is_s3() {
                StagingState::S3 { upload_id: String::new(), parts: Vec::new(), pending_start: 0, pending_len: 0 }
            } else {
                StagingState::File
            };
            state.instance.store.stage_abort(object.session, &state_guess).await?;
            orphans += 1;
        }
    }
    Ok((sessions, orphans))
}
