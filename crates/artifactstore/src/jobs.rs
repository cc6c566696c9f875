//! Background jobs of a serving instance: WAL checkpoints or head polling, the upload sweeper, the lifecycle timer,
//! and the optional relay and archiver, each restarted after an error.

use std::time::Duration;

use artifactstore_db::Backend;

use crate::instance::Instance;
use crate::problem::ApiError;
use crate::relay::RelayConfig;
use crate::server::AppState;

/// How often SQLite's write-ahead log is checkpointed and truncated.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// Deletes expired upload sessions (those no request holds) and frees their bytes; then frees staged bytes that no
/// session owns and that have sat untouched for `orphan_age`. Returns how many sessions and orphans it reclaimed.
pub async fn sweep(state: &AppState, orphan_age: Duration) -> Result<(u64, u64), ApiError> {
    state.uploads.sweep(orphan_age).await
}

/// Keeps the in-process relay running: after an error it starts again (and resumes from the stream) in 5 s.
pub(crate) async fn supervise_relay(state: AppState, config: RelayConfig) {
    loop {
        let log = state.instance.log.clone();
        let metrics = state.metrics.clone();
        let progress = move |relayed: u64| {
            let lag = log.head().sequence.saturating_sub(relayed);
            metrics.relay_lag.set(i64::try_from(lag).unwrap_or(i64::MAX));
        };
        match crate::relay::run(state.instance.log.clone(), config.clone(), progress, std::future::pending()).await {
            Ok(()) => return,
            Err(err) => tracing::error!(error = %format!("{err:#}"), "the broker relay stopped; restarting in 5 s"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// Runs the lifecycle every `every`, as `artifactstore-gc`. One run at a time per database: an instance whose turn
/// another instance's run holds skips it.
pub(crate) async fn lifecycle(state: AppState, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let started = std::time::Instant::now();
        match crate::lifecycle::run(&state.instance, "artifactstore-gc", false).await {
            Ok(report) => state.metrics.record_gc(&report, started.elapsed()),
            Err(err) if err.code() == "gc_running" => {
                tracing::debug!("another instance's lifecycle run is in progress")
            }
            Err(err) => tracing::warn!(error = ?err, "the lifecycle run failed; trying again at the next interval"),
        }
    }
}

/// Keeps the archiver running; after an error it starts again (continuing after the last segment) in 5 s.
pub(crate) async fn supervise_archive(state: AppState, config: crate::archive::ArchiveConfig) {
    loop {
        let (log, store) = (state.instance.log.clone(), state.instance.store.clone());
        match crate::archive::run(log, store, config, std::future::pending()).await {
            Ok(()) => return,
            Err(err) => tracing::error!(error = %format!("{err:#}"), "the archiver stopped; restarting in 5 s"),
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

/// How often expired upload sessions and orphaned staged bytes are reclaimed.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Reclaims expired upload sessions; staged bytes no session owns are reclaimed once they are as old as the idle
/// limit, so a request still writing them (on this or another instance) is never cut short.
pub(crate) async fn sweeper(state: AppState) {
    let orphan_age = state.instance.config.uploads.session_idle;
    let mut ticks = tokio::time::interval(SWEEP_EVERY);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        match sweep(&state, orphan_age).await {
            Ok((0, 0)) => {}
            Ok((sessions, orphans)) => tracing::info!(sessions, orphans, "reclaimed expired upload sessions"),
            Err(err) => tracing::warn!(error = ?err, "sweeping upload sessions failed"),
        }
    }
}

/// Background work of a running instance: WAL checkpoints on SQLite, head polling on PostgreSQL.
pub(crate) async fn housekeeping(instance: Instance) {
    match instance.db.backend() {
        Backend::Sqlite => {
            let mut ticks = tokio::time::interval(CHECKPOINT_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                match instance.db.checkpoint().await {
                    Ok(Some(stats)) if stats.busy => {
                        tracing::debug!(?stats, "checkpoint could not finish; a reader holds the log");
                    }
                    Ok(_) => {}
                    Err(err) => tracing::warn!(error = %err, "WAL checkpoint failed"),
                }
            }
        }
        Backend::Postgres => {
            // Other instances' commits wake this one (`LISTEN`, one notification per commit); the poll is the safety
            // net for a wake-up lost with a connection.
            let mut ticks = tokio::time::interval(instance.config.head_poll);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut wakes = HeadWakes::listen(&instance).await;
            loop {
                match wakes.as_mut() {
                    Some(listening) => {
                        tokio::select! {
                            _ = ticks.tick() => {}
                            woke = listening.next(instance.log.head().sequence) => if let Err(err) = woke {
                                tracing::warn!(error = %err, "lost the head wake-ups; polling until they are back");
                                wakes = None;
                            },
                        }
                    }
                    None => {
                        ticks.tick().await;
                        wakes = HeadWakes::listen(&instance).await;
                    }
                }
                if let Err(err) = instance.log.refresh_head().await {
                    tracing::warn!(error = %err, "reading the head failed");
                }
            }
        }
    }
}

/// The commits of other instances on the same PostgreSQL schema, as notifications on `HEAD_CHANNEL`.
struct HeadWakes {
    listener: artifactstore_db::sqlx::postgres::PgListener,
    schema: String,
}

impl HeadWakes {
    async fn listen(instance: &Instance) -> Option<HeadWakes> {
        let pool = instance.db.as_postgres()?;
        let listening = async {
            let schema: String =
                artifactstore_db::sqlx::query_scalar("SELECT current_schema()").fetch_one(pool).await?;
            let mut listener = artifactstore_db::sqlx::postgres::PgListener::connect_with(pool).await?;
            listener.listen(artifactstore_eventlog::HEAD_CHANNEL).await?;
            Ok::<_, artifactstore_db::sqlx::Error>(HeadWakes { listener, schema })
        };
        match listening.await {
            Ok(wakes) => Some(wakes),
            Err(err) => {
                tracing::warn!(error = %err, "cannot listen for other instances' commits; polling the head");
                None
            }
        }
    }

    /// Waits for a commit on this instance's schema past `known`, the head it has; the notifications already
    /// received go with it, so a burst reads the head once, and its own commits cost nothing.
    async fn next(&mut self, known: u64) -> Result<(), artifactstore_db::sqlx::Error> {
        let ours = self.schema.clone();
        let ahead = |payload: &str| {
            payload
                .rsplit_once(':')
                .is_some_and(|(schema, sequence)| schema == ours && sequence.parse().is_ok_and(|s: u64| s > known))
        };
        loop {
            let notification = self.listener.recv().await?;
            let mut woke = ahead(notification.payload());
            while let Some(more) = self.listener.next_buffered() {
                woke |= ahead(more.payload());
            }
            if woke {
                return Ok(());
            }
        }
    }
}
