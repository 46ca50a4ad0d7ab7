//! A log line for events anyone on the internet can cause (a forged probe, a guessed ticket): the
//! first at once, then at most one line a period saying how many came meanwhile, so a flood of them
//! costs a counter, never a line each.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often a flood is summed up in the log.
pub const LOG_PERIOD: Duration = Duration::from_secs(60);

/// Counts events and says when to log them.
#[derive(Debug, Default)]
pub struct LogThrottle {
    /// When the last line was said, and how many events came since.
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// One event at `now`. `Some(n)`: log it now, as `n` events (this one and those not logged
    /// since the last line); `None`: counted, to be said later.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (last, unsaid) = &mut *state;
        *unsaid += 1;
        match *last {
            Some(t) if now.saturating_duration_since(t) < LOG_PERIOD => None,
            _ => {
                *last = Some(now);
                Some(std::mem::take(unsaid))
            }
        }
    }

    /// Events counted and not logged yet (at shutdown, say).
    pub fn unsaid(&self) -> u64 {
        std::mem::take(&mut self.state.lock().unwrap_or_else(|p| p.into_inner()).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn given_a_flood_then_one_line_at_once_and_one_summary_a_period() {
        let t = LogThrottle::default();
        let start = Instant::now();
        assert_eq!(t.note(start), Some(1));
        for i in 1..1000 {
            assert_eq!(t.note(start + Duration::from_millis(i)), None);
        }
        assert_eq!(t.note(start + LOG_PERIOD), Some(1000), "999 unsaid and this one");
        assert_eq!(t.note(start + LOG_PERIOD + Duration::from_secs(1)), None);
        assert_eq!(t.unsaid(), 1);
        assert_eq!(t.unsaid(), 0);
    }
}
