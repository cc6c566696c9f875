//! What the feed's renderings may hold at once, across every request: a page of `GET /v1/events` and each batch of
//! an SSE stream's catch-up reserve room here, before they read, for the events and the text they make of them, and
//! keep it until the connection has taken that text. Clients that stop reading hold their room until the send stall
//! deadline closes them (`[http] send_stall_secs`); others wait for room meanwhile, holding nothing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The whole budget, in KiB.
const TOTAL_KIB: usize = 64 * 1024;
/// Rendering an event as JSON takes about this many times its payload's bytes, the payload included.
const RENDER_FACTOR: usize = 8;

/// Feed reads (of pages and catch-up batches) running at once: half the database pool's default of 8, so other
/// requests always find a connection however many streams catch up.
const READERS: usize = 4;

/// Room for rendered events, in KiB, and turns at reading the log for the feed.
#[derive(Debug)]
pub(crate) struct RenderBudget {
    permits: Arc<Semaphore>,
    readers: Semaphore,
}

impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget { permits: Arc::new(Semaphore::new(TOTAL_KIB)), readers: Semaphore::new(READERS) }
    }
}

/// Room held for one rendering; given back when dropped.
#[derive(Debug)]
pub(crate) struct Room {
    _permit: OwnedSemaphorePermit,
}

impl RenderBudget {
    /// A turn at reading the log for the feed, held for one statement or two.
    pub(crate) async fn reading(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.readers.acquire().await.expect("the readers' semaphore is never closed")
    }

    /// Room for rendering events whose payloads hold `payload` bytes, once there is some.
    pub(crate) async fn reserve(&self, payload: usize) -> Room {
        let permit = self.permits.clone().acquire_many_owned(kib(payload)).await;
        Room { _permit: permit.expect("the budget's semaphore is never closed") }
    }
}

/// The KiB a rendering of `payload` bytes reserves: at least one, at most the whole budget.
fn kib(payload: usize) -> u32 {
    let kib = payload.saturating_mul(RENDER_FACTOR).div_ceil(1024).clamp(1, TOTAL_KIB);
    u32::try_from(kib).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn room_is_given_back_and_bounded() {
        let budget = RenderBudget::default();
        let all = budget.reserve(usize::MAX).await;
        assert_eq!(budget.permits.available_permits(), 0, "a rendering larger than the budget takes all of it");
        let waiting = tokio::time::timeout(std::time::Duration::from_millis(50), budget.reserve(1)).await;
        assert!(waiting.is_err(), "the budget is spent");
        drop(all);
        let some = budget.reserve(4 * 1024 * 1024).await;
        assert_eq!(budget.permits.available_permits(), TOTAL_KIB - 32 * 1024);
        drop(some);
        assert_eq!(budget.permits.available_permits(), TOTAL_KIB);
    }
}
