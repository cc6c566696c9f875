//! What the feed's renderings may hold at once, across every request: a page of `GET /v1/events` and each batch of
//! an SSE stream's catch-up reserve room here for the events they read and the text they make of them, and keep it
//! until the connection has taken that text. Clients that stop reading hold their room until the send stall
//! deadline closes them (`[http] send_stall_secs`); others wait for room meanwhile, holding nothing.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The whole budget, in KiB.
const TOTAL_KIB: usize = 64 * 1024;
/// Rendering an event as JSON takes about this many times its payload's bytes, the payload included.
const RENDER_FACTOR: usize = 4;

/// Room for rendered events, in KiB.
#[derive(Debug)]
pub(crate) struct RenderBudget {
    permits: Arc<Semaphore>,
}

impl Default for RenderBudget {
    fn default() -> Self {
        RenderBudget { permits: Arc::new(Semaphore::new(TOTAL_KIB)) }
    }
}

/// Room held for one rendering; given back when dropped.
#[derive(Debug)]
pub(crate) struct Room {
    _permit: OwnedSemaphorePermit,
}

impl RenderBudget {
    /// Room for rendering events whose payloads hold `payload` bytes, now, or `None` when the budget is spent.
    pub(crate) fn try_reserve(&self, payload: usize) -> Option<Room> {
        self.permits.clone().try_acquire_many_owned(kib(payload)).ok().map(|permit| Room { _permit: permit })
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

    #[test]
    fn room_is_given_back_and_bounded() {
        let budget = RenderBudget::default();
        let all = budget.try_reserve(usize::MAX).expect("a rendering larger than the budget takes all of it");
        assert!(budget.try_reserve(1).is_none(), "the budget is spent");
        drop(all);
        let some = budget.try_reserve(4 * 1024 * 1024).unwrap();
        assert_eq!(budget.permits.available_permits(), TOTAL_KIB - 16 * 1024);
        drop(some);
        assert_eq!(budget.permits.available_permits(), TOTAL_KIB);
    }
}
