//! `SessionStore` on SQLite and PostgreSQL, without HTTP: claims and leases, resuming, aborting, bare sessions,
//! limits, expiry, and how a commit ends a session.

use artifactstore_blobstore::StagingState;
use artifactstore_db::{execute, Backend};
use artifactstore_digest::DualHasher;
use artifactstore_eventlog::{EventLog, LogOptions};
use artifactstore_testkit::{TestDb, BACKENDS};
use artifactstore_views::queries::FileState;
use uuid::Uuid;

use super::chunk::Chunk;
use super::now_ms;
use super::session::Session;
use super::session::SessionRef;
use super::store::{Ended, Ending, SessionStore};

const ACTOR: &str = "alice";
const HOUR: i64 = 3_600_000;

/// A store on a fresh database of `backend` that allows `most` open sessions; `None` where PostgreSQL is skipped.
async fn store(backend: Backend, most: u64) -> Option<(TestDb, SessionStore)> {
    let test = TestDb::of(backend).await?;
    let log = EventLog::open(test.db.clone(), LogOptions::default()).await.unwrap();
    Some((test, SessionStore::new(log, most, most)))
}

/// A new session's row, declaring 10 bytes, expiring in an hour.
fn new_session() -> Session {
    Session { declared_size: Some(10), bare_until_ms: None, ..Session::bare(ACTOR, now_ms() + HOUR) }
}

/// Opens a session with a row (as one with declarations does), expiring in an hour.
async fn open(store: &SessionStore) -> SessionRef {
    let id = Uuid::now_v7();
    assert!(store.insert(id, now_ms(), new_session()).await.unwrap(), "the limit allows it");
    SessionRef { id, bare_until: None }
}

/// A bare session's reference: no row, its id alive for an hour.
fn bare() -> SessionRef {
    SessionRef { id: Uuid::now_v7(), bare_until: Some(now_ms() + HOUR) }
}

/// The session's state after `bytes` more bytes.
fn chunk(bytes: &[u8]) -> Chunk {
    let mut hasher = DualHasher::new();
    hasher.update(bytes);
    Chunk { offset: bytes.len() as u64, expires_ms: now_ms() + HOUR, hasher, staging: StagingState::File }
}

#[tokio::test]
async fn a_claim_holds_the_session_until_it_saves_or_releases() {
    for backend in BACKENDS {
        let Some((_test, store)) = store(backend, 100).await else { continue };
        let session = open(&store).await;
        let (mut lease, row) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        assert_eq!((row.offset(), row.declared_size, row.actor.as_str()), (0, Some(10), ACTOR), "{backend:?}");
        let busy = store.claim(ACTOR, session, |_| Ok(())).await.unwrap_err();
        assert_eq!(busy.status(), 409, "{backend:?}: a held session is busy");

        // The save records the chunk and gives the lease up in the same statement.
        store.save(&mut lease, &chunk(b"hello")).await.unwrap();
        let loaded = store.load(ACTOR, session, now_ms()).await.unwrap();
        assert!(loaded.stored);
        assert_eq!(loaded.row.offset(), 5, "{backend:?}: resumes at the saved offset");
        assert!(!loaded.row.leased(now_ms()), "{backend:?}: the save released the lease");
        let mut expected = DualHasher::new();
        expected.update(b"hello");
        assert_eq!(DualHasher::restore(&loaded.row.hasher).unwrap().finalize(), expected.finalize());

        // A claim released without a save leaves the session as it was, and free.
        let (lease, _) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        lease.release().await;
        let (_lease, row) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        assert_eq!(row.offset(), 5, "{backend:?}");
    }
}

#[tokio::test]
async fn a_lapsed_lease_is_taken_over_and_its_holder_cannot_save() {
    for backend in BACKENDS {
        let Some((test, store)) = store(backend, 100).await else { continue };
        let session = open(&store).await;
        let (mut first, _) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        // The first holder stalls past its lease.
        let mut conn = test.db.acquire().await.unwrap();
        execute!(&mut conn, "UPDATE upload_sessions SET lease_until_ms = $1 WHERE id = $2", now_ms() - 1, session.id)
            .unwrap();
        drop(conn);
        let (mut second, _) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        let refused = store.save(&mut first, &chunk(b"stale")).await.unwrap_err();
        assert_eq!(refused.status(), 409, "{backend:?}: the stalled holder lost the session");
        store.save(&mut second, &chunk(b"fresh!")).await.unwrap();
        assert_eq!(store.load(ACTOR, session, now_ms()).await.unwrap().row.offset(), 6, "{backend:?}");
    }
}

#[tokio::test]
async fn a_deleted_session_gives_back_its_staging_and_is_gone() {
    for backend in BACKENDS {
        let Some((_test, store)) = store(backend, 100).await else { continue };
        let session = open(&store).await;
        let staging = store.delete(session).await.unwrap();
        assert_eq!(staging, Some(StagingState::File.to_json()), "{backend:?}");
        let gone = store.load(ACTOR, session, now_ms()).await.unwrap_err();
        assert_eq!(gone.status(), 404, "{backend:?}");
        assert_eq!(store.delete(session).await.unwrap(), None, "{backend:?}: nothing left to delete");
        assert_eq!(store.claim(ACTOR, session, |_| Ok(())).await.unwrap_err().status(), 404, "{backend:?}");
    }
}

#[tokio::test]
async fn a_bare_session_reads_empty_until_a_claim_writes_its_row() {
    for backend in BACKENDS {
        let Some((_test, store)) = store(backend, 100).await else { continue };
        let session = bare();
        let loaded = store.load(ACTOR, session, now_ms()).await.unwrap();
        assert!(!loaded.stored, "{backend:?}: nothing written by opening it");
        assert_eq!((loaded.row.offset(), loaded.row.actor.as_str()), (0, ACTOR));
        assert_eq!(store.count_open(now_ms()).await.unwrap(), 0, "{backend:?}");

        // A check that refuses the chunk writes no row.
        let refused =
            store.claim(ACTOR, session, |_| Err(crate::problem::ApiError::bad_request("no"))).await.unwrap_err();
        assert_eq!(refused.status(), 400);
        assert!(!store.exists(session.id).await.unwrap(), "{backend:?}: a refused chunk writes nothing");

        let (mut lease, row) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        assert_eq!(row.bare_until_ms, session.bare_until, "{backend:?}: its row keeps its id's expiry");
        store.save(&mut lease, &chunk(b"abc")).await.unwrap();
        assert!(store.load(ACTOR, session, now_ms()).await.unwrap().stored);
        // Its row answers only to the tagged id.
        let plain = SessionRef { id: session.id, bare_until: None };
        assert_eq!(store.load(ACTOR, plain, now_ms()).await.unwrap_err().status(), 404, "{backend:?}");
        // A session with a row is not closed by its mark alone.
        assert!(!store.close_bare(session.id, session.bare_until.unwrap()).await.unwrap(), "{backend:?}");
        // Deleting it leaves its closed mark: the id cannot open again.
        store.delete(session).await.unwrap();
        let closed = store.load(ACTOR, session, now_ms()).await.unwrap_err();
        assert_eq!(closed.status(), 404, "{backend:?}");
        assert_eq!(store.claim(ACTOR, session, |_| Ok(())).await.unwrap_err().status(), 404, "{backend:?}");
    }
}

#[tokio::test]
async fn a_closed_bare_session_stays_closed_and_an_expired_one_is_not_found() {
    for backend in BACKENDS {
        let Some((_test, store)) = store(backend, 100).await else { continue };
        let session = bare();
        assert!(store.close_bare(session.id, session.bare_until.unwrap()).await.unwrap(), "{backend:?}");
        assert!(!store.close_bare(session.id, session.bare_until.unwrap()).await.unwrap(), "closed once");
        assert_eq!(store.load(ACTOR, session, now_ms()).await.unwrap_err().status(), 404, "{backend:?}");
        assert_eq!(store.claim(ACTOR, session, |_| Ok(())).await.unwrap_err().status(), 404, "{backend:?}");
        assert!(!store.exists(session.id).await.unwrap(), "{backend:?}: no row was written");

        let expired = SessionRef { id: Uuid::now_v7(), bare_until: Some(now_ms() - 1) };
        assert_eq!(store.load(ACTOR, expired, now_ms()).await.unwrap_err().status(), 404, "{backend:?}");
    }
}

#[tokio::test]
async fn the_open_sessions_limit_holds_for_rows_and_bare_sessions() {
    for backend in BACKENDS {
        let Some((_test, store)) = store(backend, 2).await else { continue };
        open(&store).await;
        let session = bare();
        let (lease, _) = store.claim(ACTOR, session, |_| Ok(())).await.unwrap();
        lease.release().await;
        assert_eq!(store.count_open(now_ms()).await.unwrap(), 2, "{backend:?}");
        assert!(
            !store.insert(Uuid::now_v7(), now_ms(), new_session()).await.unwrap(),
            "{backend:?}: a third row is refused"
        );
        let third = store.claim(ACTOR, bare(), |_| Ok(())).await.unwrap_err();
        assert_eq!((third.status().as_u16(), third.code()), (429, "too_many_sessions"), "{backend:?}");
    }
}

#[tokio::test]
async fn expiry_deletes_idle_sessions_and_old_marks_but_not_held_ones() {
    for backend in BACKENDS {
        let Some((test, store)) = store(backend, 100).await else { continue };
        let idle = open(&store).await;
        let held = open(&store).await;
        let kept = open(&store).await;
        let (_lease, _) = store.claim(ACTOR, held, |_| Ok(())).await.unwrap();
        let mut conn = test.db.acquire().await.unwrap();
        for id in [idle.id, held.id] {
            execute!(&mut conn, "UPDATE upload_sessions SET expires_ms = $1 WHERE id = $2", now_ms() - 1, id).unwrap();
        }
        drop(conn);
        let closed = bare();
        assert!(store.close_bare(closed.id, closed.bare_until.unwrap()).await.unwrap());

        let (expired, marks) = store.delete_expired(now_ms()).await.unwrap();
        assert_eq!(expired.iter().map(|(id, _)| *id).collect::<Vec<_>>(), vec![idle.id], "{backend:?}");
        assert_eq!(marks, 0, "{backend:?}: the mark's id has not expired yet");
        assert!(store.exists(held.id).await.unwrap(), "{backend:?}: a held session outlives its expiry");
        assert!(store.exists(kept.id).await.unwrap());
        let (_, marks) = store.delete_expired(now_ms() + 2 * HOUR).await.unwrap();
        assert_eq!(marks, 1, "{backend:?}: an expired id's mark goes");
    }
}

#[tokio::test]
async fn a_commit_ends_its_session_only_as_its_hold_allows() {
    for backend in BACKENDS {
        let Some((test, store)) = store(backend, 100).await else { continue };
        let blake3 = format!("blake3:{}", "0".repeat(64));
        let end = |ending: Ending| {
            let (db, blake3) = (test.db.clone(), blake3.clone());
            async move {
                let mut tx = db.begin_write().await.unwrap();
                let ended = SessionStore::end(&mut tx, ending, &blake3, now_ms()).await.unwrap();
                tx.commit().await.unwrap();
                ended
            }
        };

        // Untouched: ended only while it is empty and unclaimed.
        let touched = open(&store).await;
        let (mut lease, _) = store.claim(ACTOR, touched, |_| Ok(())).await.unwrap();
        assert!(matches!(end(Ending::Untouched(touched)).await, Ended::Conflict(_)), "{backend:?}: held");
        store.save(&mut lease, &chunk(b"x")).await.unwrap();
        assert!(matches!(end(Ending::Untouched(touched)).await, Ended::Conflict(_)), "{backend:?}: has bytes");
        assert!(store.exists(touched.id).await.unwrap(), "{backend:?}: a refused ending changes nothing");
        let untouched = open(&store).await;
        let ended = end(Ending::Untouched(untouched)).await;
        assert!(
            matches!(ended, Ended::Ended { wrote: true, known: Some(FileState::Unknown) }),
            "{backend:?}: {ended:?}"
        );
        assert!(!store.exists(untouched.id).await.unwrap());

        // Leased: its row goes whatever it holds.
        let ended = end(Ending::Leased(touched)).await;
        assert!(
            matches!(ended, Ended::Ended { wrote: true, known: Some(FileState::Unknown) }),
            "{backend:?}: {ended:?}"
        );
        assert!(!store.exists(touched.id).await.unwrap());

        // Bare: its closed mark ends it, once.
        let session = bare();
        assert!(matches!(end(Ending::Bare(session)).await, Ended::Ended { wrote: true, .. }), "{backend:?}");
        assert!(matches!(end(Ending::Bare(session)).await, Ended::Conflict(_)), "{backend:?}: ended already");
        assert!(matches!(end(Ending::Nothing).await, Ended::Ended { wrote: false, known: None }));
    }
}
