//! Times as the user reads them: `14:05` beside a message, `Today` / `Monday 3 March 2025` between
//! days. The time zone is the machine's, or a fixed offset (tests and snapshots).

use chrono::{DateTime, Datelike, FixedOffset, Local, NaiveDate, Offset, Utc};

/// Which time zone to show times in.
#[derive(Clone, Copy, Debug)]
pub enum Zone {
    /// The machine's local time.
    Local,
    /// A fixed offset from UTC.
    Fixed(FixedOffset),
}

impl Zone {
    /// UTC, for tests.
    pub fn utc() -> Self {
        Zone::Fixed(Utc.fix())
    }

    fn at(self, ms: u64) -> DateTime<FixedOffset> {
        let utc = DateTime::<Utc>::from_timestamp_millis(ms.min(i64::MAX as u64) as i64).unwrap_or_default();
        match self {
            Zone::Local => utc.with_timezone(&Local).fixed_offset(),
            Zone::Fixed(offset) => utc.with_timezone(&offset),
        }
    }

    /// `HH:MM`.
    pub fn clock(self, ms: u64) -> String {
        self.at(ms).format("%H:%M").to_string()
    }

    /// The calendar day of `ms`.
    pub fn day(self, ms: u64) -> NaiveDate {
        self.at(ms).date_naive()
    }

    /// `Today`, `Yesterday`, or `Monday 3 March 2025`, for the day of `ms` seen on the day of `now_ms`.
    pub fn day_label(self, ms: u64, now_ms: u64) -> String {
        let (day, today) = (self.day(ms), self.day(now_ms));
        if day == today {
            "Today".to_owned()
        } else if today.pred_opt() == Some(day) {
            "Yesterday".to_owned()
        } else {
            format!("{} {} {}", day.format("%A"), day.day(), day.format("%B %Y"))
        }
    }

    /// `14:05` for today, `Mon 14:05` within a week, `3 Mar` before, for the list.
    pub fn short(self, ms: u64, now_ms: u64) -> String {
        let (at, today) = (self.at(ms), self.day(now_ms));
        let days = (today - at.date_naive()).num_days();
        match days {
            0 => at.format("%H:%M").to_string(),
            1..=6 => at.format("%a %H:%M").to_string(),
            _ => format!("{} {}", at.day(), at.format("%b")),
        }
    }
}

/// Milliseconds since the Unix epoch now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_times_then_clock_day_labels_and_short_forms_read_naturally() {
        let z = Zone::utc();
        // 2025-03-03 (a Monday) 14:05:00 UTC.
        let monday = 1_741_010_700_000;
        assert_eq!(z.clock(monday), "14:05");
        assert_eq!(z.day_label(monday, monday + 60_000), "Today");
        assert_eq!(z.day_label(monday, monday + 86_400_000), "Yesterday");
        assert_eq!(z.day_label(monday, monday + 3 * 86_400_000), "Monday 3 March 2025");
        assert_eq!(z.short(monday, monday), "14:05");
        assert_eq!(z.short(monday, monday + 2 * 86_400_000), "Mon 14:05");
        assert_eq!(z.short(monday, monday + 30 * 86_400_000), "3 Mar");
    }
}
