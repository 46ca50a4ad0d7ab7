//! The directory's request limits (issue 16): lookups per second, distinct numbers looked up per
//! day, registrations of new numbers per day, each per number and/or per source address (see
//! [`Limits`] for the defaults and why).
//!
//! The rates are `governor` GCRA limiters keyed by number and by address, on Tokio's clock (so
//! tests can pause it). Distinct numbers need a memory of what was looked up: for each number and
//! each address, the keyed hashes of the numbers it looked up in its current day, forgotten when the
//! day ends; [`Limits::tracked_lookups`] bounds them all together.
//!
//! Everything here is per instance: several instances behind one name each count on their own.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, RandomState};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Duration;

use governor::clock::Clock;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter};
use rustc_hash::FxHasher;
use tokio::time::Instant;
use whatsap2p_proto::directory::LimitKind;
use whatsap2p_proto::Number;

use crate::config::Limits;
use crate::metrics::Refusal;
use crate::sources::SourceAddr;

/// What "per day" means.
pub const DAY: Duration = Duration::from_secs(24 * 60 * 60);

/// Bursts of the per-second limits: this many seconds at the full rate. A client looks a number up
/// several times for one message (the send, its courier, the watch): a minute's worth lets a user
/// write to a hundred people at once without noticing.
const BURST: u32 = 60;

/// A request refused by a limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limited {
    /// Which, as the client is told.
    pub limit: LimitKind,
    /// Which, as the metrics count it.
    pub refusal: Refusal,
    /// When the same request would be served.
    pub retry_after: Duration,
}

impl Limited {
    /// `retry_after` in whole milliseconds for the wire, rounded up, at most `u32::MAX`.
    pub fn retry_after_ms(&self) -> u32 {
        let ms = self.retry_after.as_nanos().div_ceil(1_000_000);
        u32::try_from(ms).unwrap_or(u32::MAX)
    }
}

/// `governor`'s clock on Tokio's, so a paused test clock drives the limits too.
#[derive(Clone, Copy, Debug, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    type Instant = std::time::Instant;

    fn now(&self) -> Self::Instant {
        Instant::now().into_std()
    }
}

type Keyed<K> = RateLimiter<K, DashMapStateStore<K>, TokioClock>;

/// A limiter of `per_day` events a day (a burst of that many, then one every day / `per_day`);
/// `None` for 0, which turns the limit off.
fn daily<K: std::hash::Hash + Eq + Clone>(per_day: u32) -> Option<Keyed<K>> {
    let burst = NonZeroU32::new(per_day)?;
    let quota = Quota::with_period(DAY / per_day)?.allow_burst(burst);
    Some(RateLimiter::new(quota, DashMapStateStore::default(), TokioClock))
}

/// A limiter of `per_second` events a second, with bursts of [`BURST`] seconds' worth; `None` for
/// 0, which turns the limit off.
fn per_second<K: std::hash::Hash + Eq + Clone>(per_second: u32) -> Option<Keyed<K>> {
    let rate = NonZeroU32::new(per_second)?;
    let burst = NonZeroU32::new(per_second.saturating_mul(BURST))?;
    Some(RateLimiter::new(
        Quota::per_second(rate).allow_burst(burst),
        DashMapStateStore::default(),
        TokioClock,
    ))
}

/// Checks `key` against `limiter`, if there is one.
fn check<K: std::hash::Hash + Eq + Clone>(
    limiter: &Option<Keyed<K>>,
    key: &K,
    (limit, refusal): (LimitKind, Refusal),
) -> Result<(), Limited> {
    let Some(limiter) = limiter else { return Ok(()) };
    limiter.check_key(key).map_err(|not_until| Limited {
        limit,
        refusal,
        retry_after: not_until.wait_time_from(TokioClock.now()),
    })
}

const LOOKUP_RATE: (LimitKind, Refusal) = (LimitKind::LookupRate, Refusal::LookupRate);
const NEW_NUMBERS: (LimitKind, Refusal) = (LimitKind::NewNumbers, Refusal::NewNumbers);
const DISTINCT: (LimitKind, Refusal) = (LimitKind::DistinctLookups, Refusal::DistinctLookups);

/// Who a distinct-lookup count belongs to, by keyed hash: a copy of each number would cost more,
/// and nobody can pick numbers or addresses whose hashes collide.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Looker {
    Number(u64),
    Address(u64),
}

/// The maps below hold only keyed hashes, already as good as random: a fast hasher will do.
type Fx = BuildHasherDefault<FxHasher>;

/// Who asks: a session's number and address, hashed once for as long as the session lives (see
/// [`RequestLimits::asker`]), and the number it was last let look up.
#[derive(Clone, Debug)]
pub struct Asker {
    number: u64,
    address: u64,
    /// Boxed: a session that never looks up (most of those a directory holds) pays one pointer.
    recent: Option<Box<Recent>>,
}

/// The number an [`Asker`] was last let look up, already counted among today's distinct ones.
#[derive(Clone, Debug)]
struct Recent {
    number: Number,
    /// When the earliest of the asker's days ends: from then on the number counts anew.
    until: Instant,
}

/// What one looker looked up in its current day.
struct Seen {
    /// When its day began (its first lookup after the last day ended).
    since: Instant,
    /// Keyed hashes of the numbers.
    numbers: HashSet<u64, Fx>,
}

/// The distinct numbers each looker looked up today.
struct Distinct {
    seen: HashMap<Looker, Seen, Fx>,
    /// Hashes held in all of `seen`.
    total: usize,
}

impl Distinct {
    /// Whether `looker` may look `number` up now, as one of at most `limit` a day: if so, whether
    /// it is new to it, and when the looker's day ends. A day that ended is forgotten first.
    fn allows(
        &mut self,
        looker: Looker,
        number: u64,
        limit: u32,
        now: Instant,
    ) -> Result<(bool, Instant), Limited> {
        let seen =
            self.seen.entry(looker).or_insert_with(|| Seen { since: now, numbers: HashSet::default() });
        if now >= seen.since + DAY {
            self.total -= seen.numbers.len();
            *seen = Seen { since: now, numbers: HashSet::default() };
        }
        let day_end = seen.since + DAY;
        if seen.numbers.contains(&number) {
            return Ok((false, day_end));
        }
        if seen.numbers.len() >= limit as usize {
            let retry_after = day_end.saturating_duration_since(now);
            let (limit, refusal) = DISTINCT;
            return Err(Limited { limit, refusal, retry_after });
        }
        Ok((true, day_end))
    }

    fn record(&mut self, looker: Looker, number: u64) {
        if let Some(seen) = self.seen.get_mut(&looker) {
            if seen.numbers.insert(number) {
                self.total += 1;
            }
        }
    }

    /// Forgets the lookers whose day ended, and, while over `cap`, those that looked up the fewest
    /// numbers (forgetting them forgives the least), down to seven eighths of it so this runs
    /// rarely.
    fn trim(&mut self, cap: usize, now: Instant) {
        self.seen.retain(|_, s| now < s.since + DAY);
        self.total = self.seen.values().map(|s| s.numbers.len()).sum();
        if self.total <= cap {
            return;
        }
        let mut sizes: Vec<(usize, Looker)> = self.seen.iter().map(|(l, s)| (s.numbers.len(), *l)).collect();
        sizes.sort_unstable_by_key(|(n, _)| *n);
        let target = cap - cap / 8;
        for (n, looker) in sizes {
            if self.total <= target {
                break;
            }
            self.seen.remove(&looker);
            self.total -= n;
        }
    }
}

/// The request limits of one instance.
pub struct RequestLimits {
    limits: Limits,
    /// Keys the hashes of numbers, so nobody can pick numbers that collide.
    hasher: RandomState,
    lookups_by_number: Option<Keyed<u64>>,
    lookups_by_address: Option<Keyed<SourceAddr>>,
    new_numbers: Option<Keyed<SourceAddr>>,
    /// A std lock, held for a few hash operations, never across an await.
    distinct: Mutex<Distinct>,
}

impl RequestLimits {
    /// Limits as configured.
    pub fn new(limits: &Limits) -> Self {
        Self {
            limits: limits.clone(),
            hasher: RandomState::new(),
            lookups_by_number: per_second(limits.lookups_per_second),
            lookups_by_address: per_second(limits.address_lookups_per_second),
            new_numbers: daily(limits.new_numbers_per_address_per_day),
            distinct: Mutex::new(Distinct { seen: HashMap::default(), total: 0 }),
        }
    }

    /// `me` asking from `from`, for the checks below: a session computes this once.
    pub fn asker(&self, me: &Number, from: SourceAddr) -> Asker {
        let address =
            if self.limits.address_distinct_lookups_per_day > 0 { self.hasher.hash_one(from) } else { 0 };
        Asker { number: self.hasher.hash_one(me), address, recent: None }
    }

    /// May `asker`, from `from`, make a lookup now? Counts it if so. Checked before the number
    /// asked for is even read, so a flood of bad lookups is limited too.
    pub fn lookup_rate(&self, asker: &Asker, from: SourceAddr) -> Result<(), Limited> {
        check(&self.lookups_by_number, &asker.number, LOOKUP_RATE)?;
        check(&self.lookups_by_address, &from, LOOKUP_RATE)
    }

    /// May `from` register a number that is bound to nobody yet? Counts it if so.
    pub fn new_number(&self, from: SourceAddr) -> Result<(), Limited> {
        check(&self.new_numbers, &from, NEW_NUMBERS)
    }

    /// May `asker` learn about `wanted` (a lookup or a watch), at `now` (a session reads the clock
    /// once per batch of requests)? Counts it among the distinct numbers both looked up today if
    /// so. Watches are not limited per second: a session watches at most `MAX_WATCHED` numbers in
    /// all.
    ///
    /// A session asking again for the number it was last let look up (a client pinging a contact,
    /// resending to it) is let through without the shared map and its lock, until the day it was
    /// counted in ends. (If the map forgot the asker in between, to stay under
    /// [`Limits::tracked_lookups`], that number is not counted again that day: what forgetting
    /// forgives anyway.)
    pub fn distinct(&self, asker: &mut Asker, wanted: &Number, now: Instant) -> Result<(), Limited> {
        if asker.recent.as_ref().is_some_and(|r| r.number == *wanted && now < r.until) {
            return Ok(());
        }
        let lookers = [
            (Looker::Number(asker.number), self.limits.distinct_lookups_per_day),
            (Looker::Address(asker.address), self.limits.address_distinct_lookups_per_day),
        ];
        if lookers.iter().all(|(_, limit)| *limit == 0) {
            return Ok(());
        }
        let hash = self.hasher.hash_one(wanted);
        let mut distinct = self.distinct.lock().unwrap_or_else(|p| p.into_inner());
        let mut new = [false; 2];
        let mut until = now + DAY;
        for ((looker, limit), new) in lookers.iter().zip(&mut new) {
            if *limit > 0 {
                let day_end;
                (*new, day_end) = distinct.allows(*looker, hash, *limit, now)?;
                until = until.min(day_end);
            }
        }
        for ((looker, _), new) in lookers.iter().zip(new) {
            if new {
                distinct.record(*looker, hash);
            }
        }
        if distinct.total > self.limits.tracked_lookups {
            distinct.trim(self.limits.tracked_lookups, now);
        }
        drop(distinct);
        match &mut asker.recent {
            Some(recent) => {
                recent.number.clone_from(wanted);
                recent.until = until;
            }
            None => asker.recent = Some(Box::new(Recent { number: wanted.clone(), until })),
        }
        Ok(())
    }

    /// Forgets what no limit needs any more: rates back to full, days that ended. Run now and then
    /// (every few seconds) so what is kept stays near what the limits hold.
    pub fn upkeep(&self) {
        for limiter in [&self.lookups_by_address, &self.new_numbers].into_iter().flatten() {
            limiter.retain_recent();
        }
        if let Some(limiter) = &self.lookups_by_number {
            limiter.retain_recent();
        }
        let mut distinct = self.distinct.lock().unwrap_or_else(|p| p.into_inner());
        distinct.trim(self.limits.tracked_lookups, Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::new(s).expect("number")
    }

    const HOME: SourceAddr = SourceAddr::V4([10, 0, 0, 1]);

    /// A lookup's rate check by a session of its own.
    fn lookup(limits: &RequestLimits, me: &Number, from: SourceAddr) -> Result<(), Limited> {
        limits.lookup_rate(&limits.asker(me, from), from)
    }

    /// A distinct-numbers check by a session of its own.
    fn learn(limits: &RequestLimits, me: &Number, from: SourceAddr, wanted: &Number) -> Result<(), Limited> {
        limits.distinct(&mut limits.asker(me, from), wanted, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn given_lookups_faster_than_the_rate_then_limited_until_the_retry_time() {
        let limits = RequestLimits::new(&Limits { lookups_per_second: 2, ..Limits::default() });
        let (me, wanted) = (n("5550001"), n("5550002"));
        for _ in 0..2 * BURST {
            lookup(&limits, &me, HOME).expect("within the burst");
        }
        let limited = lookup(&limits, &me, HOME).expect_err("over the rate");
        assert_eq!(limited.limit, LimitKind::LookupRate);
        assert_eq!(limited.retry_after_ms(), 500);
        tokio::time::advance(limited.retry_after).await;
        lookup(&limits, &me, HOME).expect("served after the retry time");
        learn(&limits, &me, HOME, &wanted).expect("and the number");
    }

    #[tokio::test(start_paused = true)]
    async fn given_distinct_lookups_over_the_day_then_limited_but_known_numbers_still_served() {
        let limits = RequestLimits::new(&Limits { distinct_lookups_per_day: 3, ..Limits::default() });
        let me = n("5550001");
        for i in 0..3 {
            learn(&limits, &me, HOME, &n(&format!("555010{i}"))).expect("within the day's");
        }
        tokio::time::advance(Duration::from_secs(3600)).await;
        let limited = learn(&limits, &me, HOME, &n("5550199")).expect_err("a fourth number");
        assert_eq!(
            limited,
            Limited {
                limit: LimitKind::DistinctLookups,
                refusal: Refusal::DistinctLookups,
                retry_after: DAY - Duration::from_secs(3600)
            }
        );
        learn(&limits, &me, HOME, &n("5550101")).expect("a number looked up today is free");
        learn(&limits, &me, HOME, &n("5550102")).expect("and may be watched");
        tokio::time::advance(limited.retry_after).await;
        learn(&limits, &me, HOME, &n("5550199")).expect("a new day");
    }

    #[tokio::test(start_paused = true)]
    async fn given_one_session_asking_again_for_its_last_number_then_let_through_and_the_limit_still_holds() {
        let limits = RequestLimits::new(&Limits { distinct_lookups_per_day: 2, ..Limits::default() });
        let mut session = limits.asker(&n("5550001"), HOME);
        let (a, b, c) = (n("5550101"), n("5550102"), n("5550103"));
        let now = Instant::now;
        for _ in 0..100 {
            limits.distinct(&mut session, &a, now()).expect("its last number, again and again");
        }
        limits.distinct(&mut session, &b, now()).expect("a second number");
        limits.distinct(&mut session, &c, now()).expect_err("a third is over the day's two");
        limits.distinct(&mut session, &b, now()).expect("the last one let through");
        limits.distinct(&mut session, &a, now()).expect("one counted today");
        limits.distinct(&mut session, &c, now()).expect_err("still over, whatever came before");
        // The day ends: the number counts anew, in the new day's two.
        tokio::time::advance(DAY).await;
        limits.distinct(&mut session, &a, now()).expect("the new day's first");
        limits.distinct(&mut session, &c, now()).expect("its second");
        limits.distinct(&mut session, &b, now()).expect_err("a third in the new day");
        // Another session of the same number shares its day.
        let mut other = limits.asker(&n("5550001"), HOME);
        limits.distinct(&mut other, &b, now()).expect_err("the same number's day");
    }

    #[tokio::test(start_paused = true)]
    async fn given_many_numbers_from_one_address_then_the_address_limit_holds_for_fresh_numbers() {
        let limits = RequestLimits::new(&Limits { address_distinct_lookups_per_day: 5, ..Limits::default() });
        for i in 0..5 {
            let me = n(&format!("77700{i}"));
            learn(&limits, &me, HOME, &n(&format!("555010{i}"))).expect("within the address's");
        }
        let limited = learn(&limits, &n("7770099"), HOME, &n("5550199")).expect_err("a fresh number");
        assert_eq!(limited.limit, LimitKind::DistinctLookups);
        learn(&limits, &n("7770099"), SourceAddr::V4([10, 0, 0, 2]), &n("5550199")).expect("another address");
    }

    #[tokio::test(start_paused = true)]
    async fn given_more_pairs_than_tracked_then_the_smallest_lookers_are_forgotten_first() {
        let limits = RequestLimits::new(&Limits { tracked_lookups: 16, ..Limits::default() });
        let big = n("5550001");
        for i in 0..6 {
            learn(&limits, &big, HOME, &n(&format!("555020{i}"))).expect("lookup");
        }
        for i in 0..4 {
            learn(&limits, &n(&format!("66600{i}")), HOME, &n("5550200")).expect("lookup");
        }
        // 6 + 6 (the address) + 4 = 16, at the cap; one more trims to 14.
        learn(&limits, &n("6660099"), HOME, &n("5550200")).expect("lookup");
        let distinct = limits.distinct.lock().expect("lock");
        assert!(distinct.total <= 14, "{} kept", distinct.total);
        assert_eq!(distinct.seen[&Looker::Number(limits.hasher.hash_one(&big))].numbers.len(), 6);
    }

    /// Asks `ask` as often as the limits let it until `within` has passed (on the paused clock:
    /// a refusal waits exactly its retry time); returns how many were served.
    async fn as_fast_as_allowed(within: Duration, mut ask: impl FnMut(u64) -> Result<(), Limited>) -> u64 {
        let end = Instant::now() + within;
        let mut served = 0;
        while Instant::now() < end {
            match ask(served) {
                Ok(()) => served += 1,
                Err(l) => tokio::time::advance(l.retry_after.min(end - Instant::now())).await,
            }
        }
        served
    }

    /// The figures of `docs/security.md` ("Directory limits"): under the default limits, what an
    /// attacker asking as fast as they let it gets. Printed with
    /// `cargo test -p whatsap2p-server --lib limits::tests::figures -- --nocapture`.
    #[tokio::test(start_paused = true)]
    async fn figures_under_the_default_limits() {
        const HOUR: Duration = Duration::from_secs(3600);
        let defaults = Limits::default();
        let fresh = |i: u64| n(&format!("1{i:010}"));

        let limits = RequestLimits::new(&defaults);
        let me = n("5550666");
        let distinct_per_hour = as_fast_as_allowed(HOUR, |i| {
            lookup(&limits, &me, HOME)?;
            learn(&limits, &me, HOME, &fresh(i))
        })
        .await;
        let limits = RequestLimits::new(&defaults);
        let contacts: Vec<Number> = (0..10).map(fresh).collect();
        let same_per_hour = as_fast_as_allowed(HOUR, |i| {
            lookup(&limits, &me, HOME)?;
            learn(&limits, &me, HOME, &contacts[i as usize % contacts.len()])
        })
        .await;
        // An enumerator behind one address, with a new number of its own for each day's worth.
        let limits = RequestLimits::new(&defaults);
        let per_number = u64::from(defaults.distinct_lookups_per_day);
        let address_per_day = as_fast_as_allowed(DAY, |i| {
            let me = n(&format!("9{:09}", i / per_number));
            lookup(&limits, &me, HOME)?;
            learn(&limits, &me, HOME, &fresh(i))
        })
        .await;
        let limits = RequestLimits::new(&defaults);
        let new_numbers_per_day = as_fast_as_allowed(DAY, |_| limits.new_number(HOME)).await;
        let new_numbers_next_day = as_fast_as_allowed(DAY, |_| limits.new_number(HOME)).await;
        println!("under the default limits:");
        println!("  distinct numbers one session looks up in an hour: {distinct_per_hour}");
        println!("  lookups of the same 10 numbers one session makes in an hour: {same_per_hour}");
        println!("  distinct numbers looked up from one address in a day, fresh numbers for each session: {address_per_day}");
        println!("  new numbers registered from one address: {new_numbers_per_day} in the first day, {new_numbers_next_day} the next");
        assert_eq!(distinct_per_hour, u64::from(defaults.distinct_lookups_per_day));
        // The burst, then one every 1/rate from 1/rate on: the hour's end takes the last.
        assert_eq!(same_per_hour, u64::from(defaults.lookups_per_second) * (BURST as u64 + 3600) - 1);
        assert_eq!(address_per_day, u64::from(defaults.address_distinct_lookups_per_day));
        assert_eq!(new_numbers_per_day, 2 * u64::from(defaults.new_numbers_per_address_per_day) - 1);
        assert_eq!(new_numbers_next_day, u64::from(defaults.new_numbers_per_address_per_day));
    }

    #[tokio::test(start_paused = true)]
    async fn given_new_numbers_from_one_address_then_a_day_allows_the_burst_and_then_one_per_period() {
        let limits = RequestLimits::new(&Limits { new_numbers_per_address_per_day: 4, ..Limits::default() });
        for _ in 0..4 {
            limits.new_number(HOME).expect("within the day's");
        }
        let limited = limits.new_number(HOME).expect_err("a fifth");
        assert_eq!(
            limited,
            Limited { limit: LimitKind::NewNumbers, refusal: Refusal::NewNumbers, retry_after: DAY / 4 }
        );
        limits.new_number(SourceAddr::V4([10, 0, 0, 2])).expect("another address");
        tokio::time::advance(DAY / 4).await;
        limits.new_number(HOME).expect("one more after a quarter day");
    }
}
