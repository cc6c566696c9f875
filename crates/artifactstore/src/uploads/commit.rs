//! The one commit path: every route that ends an upload (a one-request upload, the commit of a session held by its
//! lease, the commit of an untouched or bare session that takes no lease) goes through `Uploads::commit_as`.

use artifactstore_blobstore::StagingState;
use artifactstore_digest::{Digest, DualDigest};
use artifactstore_eventlog::Refused;
use artifactstore_views::queries::FileState;
use artifactstore_views::vocab::{FileIngested, RegistryEvent};
use uuid::Uuid;

use super::chunk::{Incoming, Received};
use super::session::{Session, SessionRef};
use super::store::{Ended, Ending, Lease, SessionStore};
use super::Uploads;
use crate::auth::Caller;
use crate::problem::ApiError;

/// How a commit holds what it ends: the one difference between the routes that commit.
#[derive(Debug)]
pub(crate) enum Hold {
    /// A one-request upload (`POST ?digest=`): no session; its bytes are staged under an id of their own.
    OneRequest,
    /// A session with nothing staged that no request holds, on a filesystem store (the common `POST` + `PUT` of a
    /// small blob): the commit takes no lease, which would cost a durable write of its own, and stages under an id
    /// of its own, so a concurrent request on the session cannot mix with its bytes. The record ends the session
    /// only if it is still untouched; otherwise the commit fails with a conflict and changes nothing (ADR 0013).
    /// `stored` is false for a bare session without a row, which its closed mark ends instead; `row` is the
    /// session's row as the request found it.
    Untouched { session: SessionRef, stored: bool, row: Box<Session> },
    /// The commit claims the session's lease and adds its bytes to the session's staging.
    Leased(SessionRef),
}

/// More registry state a commit records in its own transaction, once the blob is recorded (or known): what a
/// manifest push records about the blob that holds it. It must refuse cleanly only when it wrote nothing.
pub(crate) type Then = Box<
    dyn for<'a> FnOnce(
            &'a mut artifactstore_eventlog::WriteTx,
            &'a DualDigest,
        ) -> futures::future::BoxFuture<'a, Result<(), Refused<ApiError>>>
        + Send,
>;

/// Where a commit whose hold is taken stages its bytes, and how it ends the session.
struct Staged<'a> {
    row: &'a Session,
    /// The staging its bytes go to: the session's, or its own.
    id: Uuid,
    /// The session's lease, when the commit holds it.
    lease: Option<&'a mut Lease>,
    ending: Ending,
}

/// A blob committed: its digests, and the sequence of its `v1.file.ingested` if this commit recorded it.
#[derive(Debug)]
pub(crate) struct Committed {
    pub(crate) digest: DualDigest,
    pub(crate) sequence: Option<u64>,
}

impl Uploads {
    /// Receives a last chunk (possibly empty) into the session (or a staging of the commit's own), checks the
    /// digests, puts the bytes at their content address and records the blob, ending the session as `hold` says.
    /// A mismatch keeps the chunk in the session, as if it had been appended.
    pub(crate) async fn commit_as(
        &self,
        caller: &Caller,
        hold: Hold,
        digest: Digest,
        incoming: Incoming,
        then: Option<Then>,
    ) -> Result<Committed, ApiError> {
        match hold {
            Hold::Leased(session) => {
                let (mut lease, row) = self.sessions().claim(caller.actor(), session, |_| Ok(())).await?;
                let result = async {
                    row.check_owner(caller.actor())?;
                    let ending = Ending::Leased(session);
                    let staged = Staged { row: &row, id: session.id, lease: Some(&mut lease), ending };
                    self.commit_staged(caller, staged, digest, incoming, then).await
                }
                .await;
                match result {
                    Ok(_) => lease.disarm(),
                    Err(_) => lease.release().await,
                }
                result
            }
            Hold::OneRequest | Hold::Untouched { .. } => {
                // Commits of one untouched session in this process take turns: the first goes on, the others are
                // refused before they store anything, so bytes that could never be recorded are never placed.
                let _committing = match &hold {
                    Hold::Untouched { session, .. } => Some(Committing::claim(self, session.id)?),
                    _ => None,
                };
                let own = Uuid::now_v7();
                let (staging, ending, row) = match hold {
                    Hold::Untouched { session, stored, row } => {
                        let ending = if stored { Ending::Untouched(session) } else { Ending::Bare(session) };
                        (StagingState::File, ending, *row)
                    }
                    _ => {
                        let staging = self.blobs().stage_open(own).await?;
                        let row = Session::one_request(caller.actor(), &staging);
                        (staging, Ending::Nothing, row)
                    }
                };
                let staged = Staged { row: &row, id: own, lease: None, ending };
                let result = self.commit_staged(caller, staged, digest, incoming, then).await;
                if result.is_err() {
                    if let Err(err) = self.blobs().stage_abort(own, &staging).await {
                        tracing::warn!(upload = %own, error = %err, "could not free the bytes of a failed commit");
                    }
                }
                result
            }
        }
    }

    /// The commit once its hold is taken: the chunk into staging, the digests checked, the bytes placed, the blob
    /// recorded.
    async fn commit_staged(
        &self,
        caller: &Caller,
        staged: Staged<'_>,
        digest: Digest,
        incoming: Incoming,
        then: Option<Then>,
    ) -> Result<Committed, ApiError> {
        let Staged { row, id: staged, lease, ending } = staged;
        // A last chunk riding on the commit is made durable and recorded only if the commit does not happen; when
        // it does, the staged file is synced as it moves to its content address.
        let mut received = self.receive(row, staged, incoming).await?;
        let computed = received.digest().await?;
        if let Err(mismatch) = row.check_digests(digest, &computed) {
            if received.has_bytes() {
                match (lease, ending) {
                    (Some(lease), _) => {
                        let chunk = received.finish(true).await?;
                        self.sessions().save(lease, &chunk).await?;
                    }
                    (None, Ending::Untouched(session) | Ending::Bare(session)) => {
                        // The bytes were never acknowledged: if they cannot be kept, the client still learns its
                        // digest was wrong and sends them again.
                        if let Err(err) = self.keep_chunk(caller, session, staged, received).await {
                            tracing::info!(upload = %session.id, error = ?err, "the bytes of a mismatched commit were not kept");
                        }
                    }
                    (None, _) => {}
                }
            }
            return Err(mismatch);
        }
        let placed = received.place(self.blobs(), staged, &computed).await?;
        tracing::debug!(session = %staged, blob = %computed.blake3, ?placed, "staged bytes placed");
        let sequence = self.record(caller, ending, row.media_type.clone(), computed, then).await?;
        Ok(Committed { digest: computed, sequence })
    }

    /// Moves a chunk staged by a commit without a lease into its session, under a lease, as the session's first
    /// bytes.
    async fn keep_chunk(
        &self,
        caller: &Caller,
        session: SessionRef,
        own: Uuid,
        received: Received,
    ) -> Result<(), ApiError> {
        let chunk = received.finish(false).await?;
        let (mut lease, row) = self.sessions().claim(caller.actor(), session, |_| Ok(())).await?;
        let kept = async {
            if row.offset_bytes != 0 {
                return Err(ApiError::conflict("another request wrote to this upload session meanwhile"));
            }
            self.blobs().stage_move(own, session.id).await?;
            self.sessions().save(&mut lease, &chunk).await
        }
        .await;
        lease.release().await;
        kept
    }

    /// The end of every commit, once the bytes are at their content address: one transaction ends the session as
    /// `ending` says and records `v1.file.ingested` unless the views hold the blob already, then runs `then`.
    /// Returns the event's sequence if it recorded one.
    async fn record(
        &self,
        caller: &Caller,
        ending: Ending,
        media_type: Option<String>,
        computed: DualDigest,
        then: Option<Then>,
    ) -> Result<Option<u64>, ApiError> {
        let event = RegistryEvent::FileIngested(FileIngested {
            blake3: computed.blake3.to_string(),
            sha256: computed.sha256.to_string(),
            size: computed.size,
            media_type,
        });
        let actor = caller.actor().to_owned();
        let store = self.blobs().clone();
        // The work says whether its failure left changes behind: each statement either succeeds or undoes itself,
        // and once the session is ended, any failure counts as after writing.
        self.log()
            .transact_reporting(move |wtx| {
                Box::pin(async move {
                    let RegistryEvent::FileIngested(payload) = &event else { unreachable!("built above") };
                    let ended = SessionStore::end(wtx.tx(), ending, &payload.blake3, super::now_ms())
                        .await
                        .map_err(Refused::statement)?;
                    let (wrote, known) = match ended {
                        Ended::Conflict(err) => return Err(Refused::Cleanly(err)),
                        Ended::Ended { wrote, known } => (wrote, known),
                    };
                    SessionStore::mark_ended(wtx.tx(), ending)
                        .await
                        .map_err(|err| Refused::AfterWriting(ApiError::from(err)))?;
                    let known = match known {
                        Some(known) => known,
                        // A read: whatever went wrong, it changed nothing.
                        None => artifactstore_views::queries::file_state(wtx.tx(), &payload.blake3)
                            .await
                            .map_err(|err| Refused::Cleanly(ApiError::from(err)))?,
                    };
                    match known {
                        FileState::Live => {
                            run_then(then, wtx, &computed, wrote).await?;
                            return Ok(None);
                        }
                        FileState::Unknown => {}
                        FileState::Removed => {
                            // Bytes collection removed, ingested again: their pending deletion is called off, and
                            // the bytes this commit placed must still be there (a deletion between the placing and
                            // now took them).
                            let renewed =
                                crate::lifecycle::renew_removed(wtx.tx(), &store, &payload.blake3, payload.size)
                                    .await
                                    .map_err(Refused::AfterWriting)?;
                            if !renewed {
                                return Err(Refused::AfterWriting(ApiError::unavailable(
                                    "garbage collection deleted these bytes while this upload committed them; upload \
                                     them again",
                                )));
                            }
                        }
                    }
                    let appended = artifactstore_views::record(wtx, &actor, &event).await.map_err(|err| {
                        if !wrote && record_left_nothing(&err) {
                            Refused::Cleanly(ApiError::from(err))
                        } else {
                            Refused::AfterWriting(ApiError::from(err))
                        }
                    })?;
                    run_then(then, wtx, &computed, true).await?;
                    Ok(Some(appended.sequence))
                })
            })
            .await
    }
}

/// Runs what follows a blob's record in its transaction; a refusal after the work `wrote` anything fails the group.
async fn run_then(
    then: Option<Then>,
    wtx: &mut artifactstore_eventlog::WriteTx,
    computed: &DualDigest,
    wrote: bool,
) -> Result<(), Refused<ApiError>> {
    let Some(then) = then else { return Ok(()) };
    then(wtx, computed).await.map_err(|refused| match refused {
        Refused::Cleanly(err) if wrote => Refused::AfterWriting(err),
        other => other,
    })
}

/// Whether a failed `record` of `v1.file.ingested` left nothing behind: its event was refused before any
/// statement ran, or the one statement its plan has (the blob's row) was refused and undid itself.
fn record_left_nothing(err: &artifactstore_views::Error) -> bool {
    use artifactstore_views::Error;
    err.is_refused() || matches!(err, Error::Log(_) | Error::BadPayload { .. })
}

/// A commit's claim on an untouched session, given back when the commit ends.
struct Committing {
    set: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Uuid>>>,
    session: Uuid,
}

impl Committing {
    fn claim(uploads: &Uploads, session: Uuid) -> Result<Committing, ApiError> {
        let set = uploads.committing.clone();
        let claimed = set.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).insert(session);
        if !claimed {
            return Err(ApiError::conflict("another request is committing this upload session"));
        }
        Ok(Committing { set, session })
    }
}

impl Drop for Committing {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).remove(&self.session);
    }
}
