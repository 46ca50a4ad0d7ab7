//! A tally of skipped messages of unknown kinds, so a peer speaking a newer version (or sending a
//! stream of them) costs one log line a minute, not one a frame.
//!
//! Pure: the caller passes the time, so the summarising is tested without a clock.

use std::time::Duration;

use tokio::time::Instant;

/// Lines about unknown kinds are at most this often (per reader); skips in between are counted.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(60);

/// Unknown kinds skipped on one reader, and when that was last said.
#[derive(Debug, Default)]
pub struct UnknownKinds {
    /// Skipped since the last line.
    count: u32,
    /// The kind skipped last.
    last: u32,
    /// When the last line was logged; `None` before the first unknown kind.
    said_at: Option<Instant>,
}

/// What a line about skipped kinds says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// How many messages of unknown kinds this line covers.
    pub count: u32,
    /// The kind of the latest of them.
    pub last_kind: u32,
}

impl UnknownKinds {
    /// Records one skipped message of `kind` at `now`; returns what to log, if a line is due: the
    /// first skip at once, then at most one summary every [`SUMMARY_EVERY`].
    pub fn skipped(&mut self, kind: u32, now: Instant) -> Option<Skipped> {
        self.count = self.count.saturating_add(1);
        self.last = kind;
        if self.said_at.is_some_and(|at| now < at + SUMMARY_EVERY) {
            return None;
        }
        self.said_at = Some(now);
        Some(Skipped { count: std::mem::take(&mut self.count), last_kind: kind })
    }

    /// Skips counted but not yet said.
    pub fn unsaid(&self) -> Option<Skipped> {
        (self.count > 0).then_some(Skipped { count: self.count, last_kind: self.last })
    }
}

impl Drop for UnknownKinds {
    /// The reader is done: says what it skipped since the last line.
    fn drop(&mut self) {
        if let Some(skipped) = self.unsaid() {
            log(&skipped);
        }
    }
}

/// Logs a line about skipped kinds at `info`: a peer sending what this version cannot read is worth
/// knowing about (it may need an upgrade), but it is not an error.
pub fn log(skipped: &Skipped) {
    if skipped.count == 1 {
        tracing::info!(
            kind = skipped.last_kind,
            "skipping a message of unknown kind {} (a newer protocol version?)",
            skipped.last_kind
        );
    } else {
        tracing::info!(
            kind = skipped.last_kind,
            count = skipped.count,
            "skipped {} messages of unknown kinds, the last of kind {}",
            skipped.count,
            skipped.last_kind
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_a_stream_of_unknown_kinds_then_one_line_at_once_and_one_a_minute_after() {
        let t0 = Instant::now();
        let mut u = UnknownKinds::default();
        assert_eq!(u.skipped(9, t0), Some(Skipped { count: 1, last_kind: 9 }));
        for i in 1..1000u32 {
            let at = t0 + Duration::from_millis(u64::from(i) * 10);
            assert_eq!(u.skipped(10, at), None, "frame {i}");
        }
        assert_eq!(u.unsaid(), Some(Skipped { count: 999, last_kind: 10 }));
        assert_eq!(u.skipped(11, t0 + SUMMARY_EVERY), Some(Skipped { count: 1000, last_kind: 11 }));
        assert_eq!(u.unsaid(), None);
        assert_eq!(u.skipped(12, t0 + SUMMARY_EVERY + Duration::from_secs(1)), None);
        assert_eq!(u.skipped(12, t0 + SUMMARY_EVERY * 3), Some(Skipped { count: 2, last_kind: 12 }));
    }
}
