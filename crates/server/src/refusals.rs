//! Log lines about refusals, within a budget: under attack the directory refuses thousands of
//! connections or requests a second, and a line for each (51 MB of log in 25 s, issue 16) would
//! fill the disk and bury everything else. The first refusals are logged one by one, as before, up
//! to [`BURST`] lines and then [`PER_SECOND`] a second; the rest are only counted, and
//! [`RefusalLog::summary`] says how many of each reason went unlogged (once a minute, see
//! [`crate::run`]). The metrics count every refusal either way.

use std::num::NonZeroU32;
use std::sync::Mutex;

use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tracing::warn;

use crate::limits::TokioClock;
use crate::metrics::Refusal;

/// Lines about refusals logged at once before the budget applies.
pub const BURST: u32 = 60;

/// Lines about refusals a second, once the burst is spent.
pub const PER_SECOND: u32 = 1;

/// The budget of refusal lines, and what went unlogged.
pub struct RefusalLog {
    budget: RateLimiter<NotKeyed, InMemoryState, TokioClock>,
    /// Refusals not logged since the last summary, by reason; a handful of entries at most.
    unlogged: Mutex<Vec<(Refusal, u64)>>,
}

impl Default for RefusalLog {
    fn default() -> Self {
        let rate = NonZeroU32::new(PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(BURST).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::per_second(rate).allow_burst(burst);
        Self { budget: RateLimiter::direct_with_clock(quota, TokioClock), unlogged: Mutex::default() }
    }
}

impl RefusalLog {
    /// A refusal for `reason`: whether to log a line for it now. If not, it is counted for the
    /// next [`RefusalLog::summary`].
    pub fn allow(&self, reason: Refusal) -> bool {
        if self.budget.check().is_ok() {
            return true;
        }
        let mut unlogged = self.unlogged.lock().unwrap_or_else(|p| p.into_inner());
        match unlogged.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => unlogged.push((reason, 1)),
        }
        false
    }

    /// Logs one line saying how many refusals of each reason went unlogged since the last one, if
    /// any did; returns how many.
    pub fn summary(&self) -> u64 {
        let unlogged = std::mem::take(&mut *self.unlogged.lock().unwrap_or_else(|p| p.into_inner()));
        let total = unlogged.iter().map(|(_, n)| n).sum();
        if total > 0 {
            let each: Vec<String> = unlogged.iter().map(|(r, n)| format!("{n} {r:?}")).collect();
            warn!("{total} more refusals not logged one by one: {}", each.join(", "));
        }
        total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn given_a_flood_of_refusals_then_lines_stay_within_the_budget_and_the_rest_is_summed_up() {
        let log = RefusalLog::default();
        let logged = (0..10_000).filter(|_| log.allow(Refusal::SessionsPerAddress)).count();
        assert_eq!(logged, BURST as usize);
        assert!(!log.allow(Refusal::LookupRate));
        assert_eq!(log.summary(), 10_000 - u64::from(BURST) + 1);
        assert_eq!(log.summary(), 0, "said once");
        tokio::time::advance(std::time::Duration::from_secs(1)).await;
        assert!(log.allow(Refusal::Handshake), "the budget refills");
    }
}
