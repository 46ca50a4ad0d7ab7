//! Files on their way: progress reports turned into what the gauge shows (percent, speed, time
//! left), and sizes and durations written for people.

/// An outgoing file's progress, from the client's progress events.
#[derive(Clone, Debug, PartialEq)]
pub struct Transfer {
    /// Bytes the receiver has written.
    pub bytes: u64,
    /// The file's size.
    pub total: u64,
    /// When (ms) and at how many bytes the first report came, for the average speed.
    pub first: (u64, u64),
    /// When (ms) the last report came.
    pub last_ms: u64,
}

impl Transfer {
    /// A transfer first heard of at `now_ms`, `bytes` of `total` done.
    pub fn new(bytes: u64, total: u64, now_ms: u64) -> Self {
        Self { bytes, total, first: (now_ms, bytes), last_ms: now_ms }
    }

    /// A new report.
    pub fn progress(&mut self, bytes: u64, total: u64, now_ms: u64) {
        self.bytes = bytes;
        self.total = total;
        self.last_ms = now_ms;
    }

    /// Done so far, 0.0 to 1.0.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            return 1.0;
        }
        (self.bytes as f64 / self.total as f64).clamp(0.0, 1.0)
    }

    /// Average bytes per second since the first report, once there is something to average.
    pub fn rate(&self) -> Option<f64> {
        let (t0, b0) = self.first;
        let ms = self.last_ms.saturating_sub(t0);
        let bytes = self.bytes.saturating_sub(b0);
        (ms > 0 && bytes > 0).then(|| bytes as f64 * 1000.0 / ms as f64)
    }

    /// Seconds left at the average speed.
    pub fn seconds_left(&self) -> Option<u64> {
        let rate = self.rate()?;
        Some((self.total.saturating_sub(self.bytes) as f64 / rate).ceil() as u64)
    }

    /// `42% · 12.3 MiB/s · 0:07 left`, or `42%` before the speed is known.
    pub fn summary(&self) -> String {
        let percent = (self.ratio() * 100.0).floor() as u64;
        match (self.rate(), self.seconds_left()) {
            (Some(rate), Some(left)) => {
                format!("{percent}% · {}/s · {} left", size(rate as u64), duration(left))
            }
            _ => format!("{percent}%"),
        }
    }
}

/// `412 KiB`, `1.5 MiB`: as every front end writes sizes.
pub use whatsap2p_client::display::size;

/// `0:07`, `12:30`, `1:02:03`.
pub fn duration(seconds: u64) -> String {
    let (h, m, s) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_progress_reports_then_percent_speed_and_time_left_follow() {
        let mut t = Transfer::new(0, 100 << 20, 1_000);
        assert_eq!(t.summary(), "0%");
        t.progress(10 << 20, 100 << 20, 2_000);
        assert_eq!(t.rate(), Some((10 << 20) as f64));
        assert_eq!(t.seconds_left(), Some(9));
        assert_eq!(t.summary(), "10% · 10.0 MiB/s · 0:09 left");
        assert_eq!(Transfer::new(5, 0, 0).ratio(), 1.0);
        assert_eq!(duration(3723), "1:02:03");
        assert_eq!(size(421_888), "412 KiB");
    }
}
