//! `SessionStore`: every statement on the upload session tables, leases, and the per-backend way of writing them.
//!
//! The tables are `upload_sessions` (one row per session with bytes or declarations: offset, the hashers' saved
//! state, where its bytes are staged, its lease) and `upload_sessions_closed` (a bare session's closed mark, until
//! its id expires). They are data-plane bookkeeping: no event describes them and replay never touches them.

use std::time::Duration;

use artifactstore_db::{execute, fetch_all, fetch_one, fetch_optional, sqlx, Backend, Tx};
use artifactstore_eventlog::EventLog;
use futures::future::BoxFuture;
use uuid::Uuid;

use super::chunk::Chunk;
use super::session::{busy, too_many_sessions, Session, SessionRef};
use crate::problem::ApiError;
use crate::session_key::opened_ms;
use artifactstore_views::queries::FileState;

/// How long a writing request holds its session before another request may take it over.
const LEASE: Duration = Duration::from_secs(15 * 60);

/// The columns of `Session`, in a statement that reads or returns one.
macro_rules! session_columns {
    () => {
        "actor, expires_ms, offset_bytes, declared_size, declared_blake3, declared_sha256, media_type, hasher, \
         staging, lease_until_ms, bare_until_ms"
    };
}

/// The statement that leaves a bare session's closed mark (`$1` its id, `$2` its id's expiry), unless it has a row
/// (another request wrote one, or the same transaction has yet to delete it) or a mark already.
macro_rules! close_bare_sql {
    () => {
        "INSERT INTO upload_sessions_closed (id, until_ms) SELECT $1, $2 \
         WHERE NOT EXISTS (SELECT 1 FROM upload_sessions WHERE id = $1) ON CONFLICT (id) DO NOTHING"
    };
}

/// The upload sessions of an instance's database.
///
/// On SQLite every statement goes through the log's committer, grouped with other writes, so writers never contend
/// for SQLite's one write lock. On PostgreSQL rows lock one by one, so each write has a transaction of its own and
/// never waits for the log's head; the writes that decide a bare session's fate take turns on an advisory lock.
#[derive(Debug, Clone)]
pub(crate) struct SessionStore {
    log: EventLog,
    /// At most this many sessions may be open at once.
    most: i64,
    /// At most this many of them for one actor.
    share: i64,
}

/// A session as a request finds it.
#[derive(Debug)]
pub(crate) struct Loaded {
    pub(crate) row: Session,
    /// False for a bare session without a row yet: `row` is then what its row would be.
    pub(crate) stored: bool,
}

/// How a commit ends the session it commits, in the transaction that records its blob.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Ending {
    /// There is no session (a one-request upload).
    Nothing,
    /// The commit holds the session's lease: its row is deleted.
    Leased(SessionRef),
    /// The commit holds no lease: the row is deleted only if it is still empty and unclaimed.
    Untouched(SessionRef),
    /// A bare session without a row: its closed mark is written, only if no row appeared and no mark is there.
    Bare(SessionRef),
}

impl Ending {
    /// The bare session the commit ends, if it is one: its UUID and its id's expiry.
    fn bare(self) -> Option<(Uuid, i64)> {
        match self {
            Ending::Leased(session) | Ending::Untouched(session) | Ending::Bare(session) => {
                Some((session.id, session.bare_until?))
            }
            Ending::Nothing => None,
        }
    }
}

/// How ending a session went, within the record's transaction.
#[derive(Debug)]
pub(crate) enum Ended {
    /// The session was ended (or there was none); `Some(state)` says what the views hold of the blob, when the
    /// ending statement could tell.
    Ended { wrote: bool, known: Option<FileState> },
    /// Another request got there first; nothing was written.
    Conflict(ApiError),
}

impl SessionStore {
    /// The sessions on `log`'s database, at most `most` open at once and `share` of them for one actor.
    pub(crate) fn new(log: EventLog, most: u64, share: u64) -> SessionStore {
        let n = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        SessionStore { log, most: n(most), share: n(share) }
    }

    /// The refusal a new session for `actor` at `now` meets, if a limit is reached: its share, or the total.
    pub(crate) async fn refusal(&self, actor: &str, now: i64) -> Result<Option<ApiError>, ApiError> {
        let mut conn = self.log.database().acquire().await?;
        let (all, held): (i64, i64) = fetch_one!(
            &mut conn,
            (i64, i64),
            "SELECT COUNT(*), COUNT(CASE WHEN actor = $1 THEN 1 END) FROM upload_sessions WHERE expires_ms > $2",
            actor,
            now
        )?;
        Ok(if held >= self.share {
            Some(super::session::too_many_sessions_of_subject(self.share))
        } else if all >= self.most {
            Some(too_many_sessions(self.most))
        } else {
            None
        })
    }

    /// The refusal of a session a limit kept out (by the time it is asked, sessions may have ended: the total's).
    pub(crate) async fn refused(&self, actor: &str, now: i64) -> Result<ApiError, ApiError> {
        Ok(self.refusal(actor, now).await?.unwrap_or_else(|| too_many_sessions(self.most)))
    }

    /// How many sessions with rows are open (not expired) at `now`.
    pub(crate) async fn count_open(&self, now: i64) -> Result<i64, ApiError> {
        let mut conn = self.log.database().acquire().await?;
        let (open,): (i64,) =
            fetch_one!(&mut conn, (i64,), "SELECT COUNT(*) FROM upload_sessions WHERE expires_ms > $1", now)?;
        Ok(open)
    }

    /// Writes the row `new` of a session opened at `created_ms` (as `POST` does for one with declarations, or any on
    /// S3), unless `most` sessions are open: the statement checks the limit, so on SQLite, where every write goes
    /// through the committer, concurrent opens cannot overshoot it; on PostgreSQL they can, by the few that race.
    /// Says whether it wrote the row.
    pub(crate) async fn insert(&self, id: Uuid, created_ms: i64, new: Session) -> Result<bool, ApiError> {
        let (most, share) = (self.most, self.share);
        let written = self
            .write(move |tx| {
                Box::pin(async move {
                    execute!(
                        tx,
                        "INSERT INTO upload_sessions (id, actor, created_ms, expires_ms, offset_bytes, declared_size, \
                         declared_blake3, declared_sha256, media_type, hasher, staging) \
                         SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11 \
                         WHERE (SELECT COUNT(*) FROM upload_sessions WHERE expires_ms > $3) < $12 \
                         AND (SELECT COUNT(*) FROM upload_sessions WHERE actor = $2 AND expires_ms > $3) < $13",
                        id,
                        new.actor,
                        created_ms,
                        new.expires_ms,
                        new.offset_bytes,
                        new.declared_size,
                        new.declared_blake3,
                        new.declared_sha256,
                        new.media_type,
                        new.hasher,
                        new.staging,
                        most,
                        share,
                    )
                })
            })
            .await?;
        Ok(written > 0)
    }

    /// The session `session` names, for `actor` (whose tag the id carried, for a bare session): its row, or the empty
    /// row of a bare session that has none yet. Not found when it never existed, expired, or was closed.
    pub(crate) async fn load(&self, actor: &str, session: SessionRef, now: i64) -> Result<Loaded, ApiError> {
        let id = session.id;
        let mut conn = self.log.database().acquire().await?;
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
                if until <= now {
                    return Err(ApiError::not_found(format!("upload session {id} has expired")));
                }
                return Ok(Loaded { row: Session::bare(actor, until), stored: false });
            }
        }
        let row = fetch_optional!(
            &mut conn,
            Session,
            concat!("SELECT ", session_columns!(), " FROM upload_sessions WHERE id = $1"),
            id
        )?;
        match row {
            // A bare session's row is reached only through its tagged id.
            Some(row) if row.bare_until_ms.is_some() && session.bare_until.is_none() => {
                Err(ApiError::not_found(format!("no upload session {id}")))
            }
            Some(row) if row.expires_ms > now => Ok(Loaded { row, stored: true }),
            Some(_) => Err(ApiError::not_found(format!("upload session {id} has expired"))),
            // Gone between the two reads of a bare session, or never there.
            None => Err(ApiError::not_found(format!("no upload session {id}"))),
        }
    }

    /// Claims the session for one writing request and reads its row in the same statement. A bare session without a
    /// row gets its row, claimed, if `check` takes its empty row and the open sessions' limit allows one more.
    pub(crate) async fn claim(
        &self,
        actor: &str,
        session: SessionRef,
        check: impl FnOnce(&Session) -> Result<(), ApiError>,
    ) -> Result<(Lease, Session), ApiError> {
        let id = session.id;
        let token = Uuid::new_v4();
        let now = super::now_ms();
        let until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX / 2);
        let bare_without_row = match session.bare_until {
            Some(bare_until) => {
                let loaded = self.load(actor, session, now).await?;
                if !loaded.stored {
                    check(&loaded.row)?;
                }
                (!loaded.stored).then_some(bare_until)
            }
            None => None,
        };
        let claimed = match bare_without_row {
            Some(bare_until) => self.claim_bare(actor, id, bare_until, token, until, now).await?,
            None => {
                let bare = session.bare_until.is_some();
                self.write(move |tx| {
                    Box::pin(async move {
                        fetch_optional!(
                            tx,
                            Session,
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
                            bare,
                        )
                    })
                })
                .await?
            }
        };
        if let Some(row) = claimed {
            return Ok((Lease { store: self.clone(), id, token, armed: true }, row));
        }
        // Tell a missing, expired or closed session apart from a busy one, and a bare one the limit kept out.
        let now = super::now_ms();
        if !self.load(actor, session, now).await?.stored {
            return Err(self.refused(actor, now).await?);
        }
        Err(busy())
    }

    /// Writes a bare session's row, claimed by `token` until `until`, unless the session was closed or another
    /// request wrote its row meanwhile, or the open sessions' limit is reached.
    async fn claim_bare(
        &self,
        actor: &str,
        id: Uuid,
        bare_until: i64,
        token: Uuid,
        until: i64,
        now: i64,
    ) -> Result<Option<Session>, ApiError> {
        let row = Session::bare(actor, bare_until);
        let (most, share) = (self.most, self.share);
        let opened = opened_ms(id).unwrap_or(now);
        self.write(move |tx| {
            Box::pin(async move {
                lock_bare(tx, id).await?;
                fetch_optional!(
                    tx,
                    Session,
                    concat!(
                        "INSERT INTO upload_sessions (id, actor, created_ms, expires_ms, offset_bytes, hasher, \
                         staging, lease, lease_until_ms, bare_until_ms) \
                         SELECT $1, $2, $3, $4, 0, $5, $6, $7, $8, $4 \
                         WHERE $4 > $9 AND NOT EXISTS (SELECT 1 FROM upload_sessions_closed WHERE id = $1) \
                         AND (SELECT COUNT(*) FROM upload_sessions WHERE expires_ms > $9) < $10 \
                         AND (SELECT COUNT(*) FROM upload_sessions WHERE actor = $2 AND expires_ms > $9) < $11 \
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
                    share,
                )
            })
        })
        .await
    }

    /// Records a staged chunk in the session's row and gives the lease up in the same statement (one durable write
    /// where a save and a release would be two), if the lease still holds it. Once the statement ran, `lease`
    /// holds nothing.
    pub(crate) async fn save(&self, lease: &mut Lease, chunk: &Chunk) -> Result<(), ApiError> {
        let (id, token) = (lease.id, lease.token);
        let (offset, hasher, staging, expires_ms) = (
            i64::try_from(chunk.offset).unwrap_or(i64::MAX),
            chunk.hasher.save(),
            chunk.staging.to_json(),
            chunk.expires_ms,
        );
        let saved = self
            .write(move |tx| {
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

    async fn release(&self, id: Uuid, token: Uuid) -> Result<(), ApiError> {
        self.write(move |tx| {
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

    /// Ends a bare session that has no row with its closed mark; false if a request gave it a row meanwhile (or it
    /// was closed already).
    pub(crate) async fn close_bare(&self, id: Uuid, until: i64) -> Result<bool, ApiError> {
        self.write(move |tx| {
            Box::pin(async move {
                lock_bare(tx, id).await?;
                Ok(execute!(tx, close_bare_sql!(), id, until)? > 0)
            })
        })
        .await
    }

    /// Deletes a session's row (leaving a bare session's closed mark) and returns its staging, if it had a row.
    pub(crate) async fn delete(&self, session: SessionRef) -> Result<Option<String>, ApiError> {
        let SessionRef { id, bare_until } = session;
        let staging = self
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
                        execute!(wtx.tx(), close_bare_sql!(), id, until)?;
                    }
                    Ok::<_, ApiError>(staging)
                })
            })
            .await?;
        Ok(staging.map(|(staging,)| staging))
    }

    /// Ends the session a commit commits, inside the transaction that records its blob, and says whether the views
    /// know the blob already (the ending statement reads it, one round trip for both). Each statement either
    /// succeeds or undoes itself, and `Ended::Ended { wrote }` says whether one changed a row.
    pub(crate) async fn end(tx: &mut Tx, ending: Ending, blake3: &str, now: i64) -> Result<Ended, sqlx::Error> {
        if let Some((id, _)) = ending.bare() {
            lock_bare(tx, id).await?;
        }
        let deleted = match ending {
            Ending::Nothing => return Ok(Ended::Ended { wrote: false, known: None }),
            Ending::Leased(session) => fetch_optional!(
                tx,
                (i64,),
                concat!(
                    "DELETE FROM upload_sessions WHERE id = $1 RETURNING ",
                    artifactstore_views::file_state_sql!(2)
                ),
                session.id,
                blake3
            )?,
            Ending::Untouched(session) => {
                let deleted = fetch_optional!(
                    tx,
                    (i64,),
                    concat!(
                        "DELETE FROM upload_sessions WHERE id = $1 AND offset_bytes = 0 AND expires_ms > $2 \
                         AND (lease IS NULL OR lease_until_ms < $2) RETURNING ",
                        artifactstore_views::file_state_sql!(3)
                    ),
                    session.id,
                    now,
                    blake3
                )?;
                if deleted.is_none() {
                    return Ok(Ended::Conflict(ApiError::conflict(
                        "another request wrote to this upload session meanwhile, or it expired; ask HEAD for its offset",
                    )));
                }
                deleted
            }
            Ending::Bare(session) => {
                // The closed mark ends the session (one statement, as a row's deletion would).
                let closed = fetch_optional!(
                    tx,
                    (i64,),
                    concat!(close_bare_sql!(), " RETURNING ", artifactstore_views::file_state_sql!(3)),
                    session.id,
                    session.bare_until.unwrap_or(i64::MAX),
                    blake3
                )?;
                if closed.is_none() {
                    return Ok(Ended::Conflict(ApiError::conflict(
                        "this upload session was committed or aborted meanwhile, or another request wrote to it; ask \
                         HEAD for its offset",
                    )));
                }
                closed
            }
        };
        Ok(Ended::Ended { wrote: deleted.is_some(), known: deleted.map(|(state,)| FileState::from_sql(state)) })
    }

    /// After `end` ended a bare session that had a row: its closed mark, so the id cannot open again (nothing for
    /// other endings).
    pub(crate) async fn mark_ended(tx: &mut Tx, ending: Ending) -> Result<(), sqlx::Error> {
        if let (Ending::Leased(_) | Ending::Untouched(_), Some((id, until))) = (ending, ending.bare()) {
            execute!(tx, close_bare_sql!(), id, until)?;
        }
        Ok(())
    }

    /// Deletes the sessions expired at `now` that no request holds, returning their ids and stagings, and the closed
    /// marks of ids expired by then.
    pub(crate) async fn delete_expired(&self, now: i64) -> Result<(Vec<(Uuid, String)>, u64), ApiError> {
        let expired = self
            .write(move |tx| {
                Box::pin(async move {
                    fetch_all!(
                        tx,
                        (Uuid, String),
                        "DELETE FROM upload_sessions WHERE expires_ms <= $1 \
                         AND (lease IS NULL OR lease_until_ms < $1) RETURNING id, staging",
                        now
                    )
                })
            })
            .await?;
        // Closed marks outlive nothing: once a bare session's id has expired, it names no session anyway.
        let marks = self
            .write(move |tx| {
                Box::pin(async move { execute!(tx, "DELETE FROM upload_sessions_closed WHERE until_ms <= $1", now) })
            })
            .await?;
        Ok((expired, marks))
    }

    /// Whether a session has a row.
    pub(crate) async fn exists(&self, id: Uuid) -> Result<bool, ApiError> {
        let mut conn = self.log.database().acquire().await?;
        let row = fetch_optional!(&mut conn, (i64,), "SELECT offset_bytes FROM upload_sessions WHERE id = $1", id)?;
        Ok(row.is_some())
    }

    /// Runs one statement's worth of bookkeeping: on SQLite through the log's committer, grouped with other writes
    /// (the one statement undoes itself if it fails, so it needs no rollback point of its own); on PostgreSQL in a
    /// transaction of its own.
    async fn write<T, F>(&self, work: F) -> Result<T, ApiError>
    where
        F: for<'a> FnOnce(&'a mut Tx) -> BoxFuture<'a, Result<T, sqlx::Error>> + Send + 'static,
        T: Send + 'static,
    {
        let db = self.log.database();
        if db.backend() == Backend::Postgres {
            let mut tx = db.begin_write().await?;
            let value = work(&mut tx).await?;
            tx.commit().await?;
            return Ok(value);
        }
        Ok(self.log.transact_statement(work).await?)
    }
}

/// On PostgreSQL, makes the writes that decide a bare session's fate (its row's creation, its closing) take turns
/// for one id until the transaction ends: under read committed each would otherwise miss the other's uncommitted
/// row, and a session could be both closed and written to. On SQLite the committer serialises every write already.
async fn lock_bare(tx: &mut Tx, id: Uuid) -> Result<(), sqlx::Error> {
    if tx.backend() == Backend::Postgres {
        let bytes: [u8; 8] = id.as_bytes()[8..].try_into().expect("a UUID has 16 bytes");
        execute!(tx, "SELECT pg_advisory_xact_lock($1)", i64::from_le_bytes(bytes))?;
    }
    Ok(())
}

/// A claim on a session for one writing request, released when dropped.
#[derive(Debug)]
pub(crate) struct Lease {
    store: SessionStore,
    id: Uuid,
    token: Uuid,
    /// Whether the row may still hold this lease (false once a save gave it up or the row is gone).
    armed: bool,
}

impl Lease {
    /// Gives the lease up, unless a save already did.
    pub(crate) async fn release(mut self) {
        if !std::mem::replace(&mut self.armed, false) {
            return;
        }
        if let Err(err) = self.store.release(self.id, self.token).await {
            tracing::warn!(session = %self.id, error = ?err, "could not release an upload lease");
        }
    }

    /// The session's row is gone (committed or aborted); nothing to release.
    pub(crate) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.armed {
            let (store, id, token) = (self.store.clone(), self.id, self.token);
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = store.release(id, token).await {
                        tracing::warn!(session = %id, error = ?err, "could not release an upload lease");
                    }
                });
            }
        }
    }
}
