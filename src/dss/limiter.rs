//! The request budget of a client: a token bucket (rate and burst), a cap on requests in flight, and a
//! pause that a 429 answer imposes on every call of the client.
//!
//! Tokens are reserved: a caller that finds the bucket empty takes a token "on credit" and sleeps until
//! it would have been refilled, so waiters are served in order and the rate never exceeds
//! `burst + rate * t` requests over any span `t`. The in-flight permit is taken first, so a request
//! that waits for a slot does not burn a token meanwhile. A caller may bound its wait: when the slot,
//! the token or the end of a pause is further away than that, it gets [`Busy`] at once (or when its
//! bound passes) with no token taken, instead of holding its task. Calls of the class that gives way
//! (job starts) take neither credit nor a waiting slot: only a token and a slot free now, beyond a
//! share of the burst kept for the others, while none of the others waits. All times are
//! `tokio::time` instants, which lets tests run on a paused clock.

use std::sync::{
    Arc, Mutex,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore, TryAcquireError},
    time::{Duration, Instant},
};

use super::Limits;
use crate::sync::lock;

/// Shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Limiter {
    bucket: Mutex<Bucket>,
    slots: Arc<Semaphore>,
    /// The current in-flight cap; `slots` holds `max_in_flight - in_use - owed` permits.
    max_in_flight: Mutex<usize>,
    /// Permits to retire when they come back (after the cap was lowered while they were in use).
    owed: Arc<AtomicUsize>,
    /// Calls of the ordinary class waiting for the budget: calls that give way wait while any do.
    ordinary_waiting: Arc<AtomicUsize>,
}

/// Which calls go first when the budget is short.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) enum Class {
    /// Served in turn.
    #[default]
    Ordinary,
    /// Takes the budget only when no ordinary call waits for it (job starts give way to the looks
    /// at running jobs, so that a backlog of starts never delays noticing that jobs ended).
    GivesWay,
}

/// Counts an ordinary call as waiting while it lives.
struct Waiting(Arc<AtomicUsize>);

impl Waiting {
    fn new(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    /// Available tokens; negative when callers have reserved future tokens.
    tokens: f64,
    refilled_at: Instant,
    paused_until: Option<Instant>,
}

impl Bucket {
    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.refilled_at = now;
    }
}

/// Held while a request is in flight; returns the slot on drop.
#[derive(Debug)]
pub(crate) struct Permit {
    permit: Option<OwnedSemaphorePermit>,
    owed: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(permit) = self.permit.take() else { return };
        // Retire the slot instead of returning it when the cap was lowered meanwhile.
        let retired = self
            .owed
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok();
        if retired {
            permit.forget();
        }
    }
}

impl Limiter {
    /// The permit of a call that holds `slot` (none when the semaphore was closed).
    fn permit(&self, slot: Option<OwnedSemaphorePermit>) -> Permit {
        Permit {
            permit: slot,
            owed: Arc::clone(&self.owed),
        }
    }

    pub(crate) fn new(limits: Limits) -> Self {
        let limits = limits.sanitized();
        let burst = f64::from(limits.burst);
        Self {
            bucket: Mutex::new(Bucket {
                rate: limits.requests_per_second,
                burst,
                tokens: burst,
                refilled_at: Instant::now(),
                paused_until: None,
            }),
            slots: Arc::new(Semaphore::new(limits.max_in_flight.min(Semaphore::MAX_PERMITS))),
            max_in_flight: Mutex::new(limits.max_in_flight.min(Semaphore::MAX_PERMITS)),
            owed: Arc::new(AtomicUsize::new(0)),
            ordinary_waiting: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Changes the budget. Tokens above the new burst are dropped; a lower in-flight cap takes effect as
    /// requests complete.
    pub(crate) fn set_limits(&self, limits: Limits) {
        let limits = limits.sanitized();
        {
            let mut bucket = lock(&self.bucket);
            bucket.refill(Instant::now());
            bucket.rate = limits.requests_per_second;
            bucket.burst = f64::from(limits.burst);
            bucket.tokens = bucket.tokens.min(bucket.burst);
        }
        let new_max = limits.max_in_flight.min(Semaphore::MAX_PERMITS);
        let mut max = lock(&self.max_in_flight);
        if new_max > *max {
            let mut grow = new_max - *max;
            // Cancel debts first, then hand out new slots.
            while grow > 0 {
                let owed = self.owed.load(Ordering::Acquire);
                if owed == 0 {
                    break;
                }
                let take = owed.min(grow);
                if self
                    .owed
                    .compare_exchange(owed, owed - take, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
                {
                    grow -= take;
                }
            }
            self.slots.add_permits(grow);
        } else if new_max < *max {
            let shrink = *max - new_max;
            let forgotten = self.slots.forget_permits(shrink);
            self.owed.fetch_add(shrink - forgotten, Ordering::AcqRel);
        }
        *max = new_max;
    }

    /// Blocks every call until `until` (a 429 answer). An earlier deadline never shortens a pause.
    pub(crate) fn pause_until(&self, until: Instant) {
        let mut bucket = lock(&self.bucket);
        if bucket.paused_until.is_none_or(|current| current < until) {
            bucket.paused_until = Some(until);
        }
    }

    /// Waits for an in-flight slot and a token, and for any pause to end. Returns the permit and the
    /// time spent waiting (zero when nothing had to be waited for). Unbounded: see
    /// [`Limiter::acquire_within`].
    #[cfg(test)]
    pub(crate) async fn acquire(&self) -> (Permit, Duration) {
        match self.acquire_within(None, Class::Ordinary).await {
            Ok(acquired) => acquired,
            Err(busy) => unreachable!("an unbounded wait is never refused: {busy:?}"),
        }
    }

    /// Like [`Limiter::acquire`], but gives up when the wait would exceed `max_wait`: at once when the
    /// token or the end of a pause is known to be further away (no token is taken), or when
    /// `max_wait` passes while waiting for an in-flight slot or when a pause arrives meanwhile.
    pub(crate) async fn acquire_within(
        &self,
        max_wait: Option<Duration>,
        class: Class,
    ) -> Result<(Permit, Duration), Busy> {
        let started = Instant::now();
        let deadline = max_wait.map(|w| started + w);
        if class == Class::GivesWay {
            return self.take_spare(started, deadline).await;
        }
        let mut waited = false;
        // An ordinary call counts as waiting until it holds its slot and its token.
        let _waiting = Waiting::new(&self.ordinary_waiting);
        // The semaphore is never closed; should it be, requests go on unthrottled rather than fail.
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                waited = true;
                let slot = Arc::clone(&self.slots).acquire_owned();
                match deadline {
                    None => slot.await.ok(),
                    Some(deadline) => match tokio::time::timeout_at(deadline, slot).await {
                        Ok(permit) => permit.ok(),
                        // How long the slots stay busy is unknown: suggest the caller's own bound.
                        Err(_) => {
                            return Err(Busy {
                                retry_after: max_wait.unwrap_or_default().max(MIN_BUSY_RETRY),
                                waited: started.elapsed(),
                            });
                        }
                    },
                }
            }
        };
        let permit = self.permit(permit);

        // Wait out any pause, then reserve a token and sleep until it is ours. A call holds no token
        // while a pause lasts (one that arrives meanwhile takes it back): the bucket refills during a
        // pause, and calls that kept their tokens would all go at its end on top of a full bucket.
        loop {
            let (ready_at, reserved) = {
                let mut bucket = lock(&self.bucket);
                let now = Instant::now();
                bucket.refill(now);
                let (ready_at, reserved) = match bucket.paused_until {
                    Some(until) if until > now => (until, false),
                    _ if bucket.tokens >= 1.0 => (now, true),
                    _ => {
                        let wait = ((1.0 - bucket.tokens) / bucket.rate).min(MAX_TOKEN_WAIT_SECS);
                        (now + Duration::from_secs_f64(wait), true)
                    }
                };
                if let Some(deadline) = deadline
                    && ready_at > deadline
                {
                    return Err(Busy {
                        retry_after: ready_at - now,
                        waited: started.elapsed(),
                    });
                }
                if reserved {
                    bucket.tokens -= 1.0;
                }
                (ready_at, reserved)
            };
            if ready_at > Instant::now() {
                waited = true;
                tokio::time::sleep_until(ready_at).await;
            }
            if !reserved {
                continue;
            }
            // A 429 may have arrived while we slept: give the token back and wait the pause out.
            let mut bucket = lock(&self.bucket);
            let now = Instant::now();
            if bucket.paused_until.is_some_and(|until| until > now) {
                bucket.refill(now);
                bucket.tokens = (bucket.tokens + 1.0).min(bucket.burst);
                continue;
            }
            break;
        }
        Ok((permit, if waited { started.elapsed() } else { Duration::ZERO }))
    }
}

impl Limiter {
    /// A call that gives way takes only what is spare: a token and an in-flight slot free now, while
    /// no ordinary call waits for the budget and the bucket keeps its share ([`SPARE_RESERVE`]) for
    /// the ordinary calls to come. It never reserves a future token nor holds a slot while it waits,
    /// so a backlog of such calls never stands in front of an ordinary call that comes after it, and
    /// the looks at running jobs that one listing wakes together find their tokens there (on a
    /// saturated budget they would queue one token's time apart). It looks again every token's time.
    async fn take_spare(
        &self,
        started: Instant,
        deadline: Option<Instant>,
    ) -> Result<(Permit, Duration), Busy> {
        let mut waited = false;
        loop {
            let tick = {
                let mut bucket = lock(&self.bucket);
                let now = Instant::now();
                bucket.refill(now);
                let open = bucket.paused_until.is_none_or(|until| until <= now);
                let quiet = self.ordinary_waiting.load(Ordering::Acquire) == 0;
                let reserve = (bucket.burst * SPARE_RESERVE).floor();
                if open && quiet && bucket.tokens >= 1.0 + reserve {
                    match Arc::clone(&self.slots).try_acquire_owned() {
                        Err(TryAcquireError::NoPermits) => {}
                        // The semaphore is never closed; should it be, the call goes unthrottled.
                        slot => {
                            bucket.tokens -= 1.0;
                            let waited = if waited {
                                now.saturating_duration_since(started)
                            } else {
                                Duration::ZERO
                            };
                            return Ok((self.permit(slot.ok()), waited));
                        }
                    }
                }
                Duration::from_secs_f64(1.0 / bucket.rate).clamp(GIVE_WAY_TICK_MIN, GIVE_WAY_TICK_MAX)
            };
            let now = Instant::now();
            if let Some(deadline) = deadline
                && now + tick > deadline
            {
                return Err(Busy {
                    retry_after: tick,
                    waited: started.elapsed(),
                });
            }
            waited = true;
            tokio::time::sleep(tick).await;
        }
    }
}

/// The share of the bucket's burst that calls giving way leave to ordinary calls. In steady state
/// they get the same rate whatever the share (what the ordinary calls leave of it); a larger share
/// lets more looks woken together go at once. Measured in the bench's burst (1,000 builds on 20
/// req/s): detection lag p99 2.99 s with no share, 2.05 s with half, 1.28 s with three quarters;
/// all Succeeded in 110 s each time.
const SPARE_RESERVE: f64 = 0.75;

/// How often a call that gives way looks again (one token's time, within these bounds).
const GIVE_WAY_TICK_MIN: Duration = Duration::from_millis(10);
const GIVE_WAY_TICK_MAX: Duration = Duration::from_millis(500);

/// A bounded wait for the budget gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Busy {
    /// When the budget is expected to have room (a lower bound when in-flight slots are busy).
    pub(crate) retry_after: Duration,
    /// How long the caller waited before giving up.
    pub(crate) waited: Duration,
}

/// The shortest retry suggested for busy in-flight slots.
const MIN_BUSY_RETRY: Duration = Duration::from_secs(1);

/// A bound on one token wait, so a tiny rate cannot produce an overflowing duration.
const MAX_TOKEN_WAIT_SECS: f64 = 86_400.0;

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use super::*;

    fn limits(rps: f64, burst: u32, max_in_flight: usize) -> Limits {
        Limits {
            requests_per_second: rps,
            burst,
            max_in_flight,
        }
    }

    /// Sends `n` requests as fast as the limiter allows and returns their send times (relative).
    async fn send_times(limiter: Arc<Limiter>, n: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..n {
            let limiter = Arc::clone(&limiter);
            tasks.push(tokio::spawn(async move {
                let (_permit, _) = limiter.acquire().await;
                Instant::now() - start
            }));
        }
        let mut times = Vec::new();
        for task in tasks {
            times.push(task.await.unwrap());
        }
        times.sort();
        times
    }

    fn assert_within_budget(times: &[Duration], rps: f64, burst: u32) {
        // For every window [times[i], times[j]], the count must be <= burst + rps * width (+ rounding).
        for i in 0..times.len() {
            for j in i..times.len() {
                let width = (times[j] - times[i]).as_secs_f64();
                let count = (j - i + 1) as f64;
                assert!(
                    count <= f64::from(burst) + rps * width + 1e-6,
                    "{count} requests in {width}s exceeds burst {burst} + {rps}/s"
                );
            }
        }
    }

    /// A call of `class` in a task of its own: when it got the budget (since `t0`); it holds its
    /// permit `hold` longer.
    fn call(
        limiter: &Arc<Limiter>,
        t0: Instant,
        class: Class,
        hold: Duration,
    ) -> tokio::task::JoinHandle<Duration> {
        let limiter = Arc::clone(limiter);
        tokio::spawn(async move {
            let (_permit, _) = limiter.acquire_within(None, class).await.unwrap();
            let got = t0.elapsed();
            tokio::time::sleep(hold).await;
            got
        })
    }

    /// Calls that give way and arrived first never stand in front of an ordinary call that comes
    /// after them: they hold no future token and no in-flight slot while they wait, and the look
    /// takes the next token. Together they stay within the budget.
    #[tokio::test(start_paused = true)]
    async fn a_backlog_of_calls_that_give_way_does_not_delay_a_later_ordinary_call() {
        let limiter = Arc::new(Limiter::new(limits(10.0, 1, 6)));
        let t0 = Instant::now();
        let (_first, _) = limiter.acquire().await;
        let hold = Duration::from_millis(30);
        let starts: Vec<_> = (0..5)
            .map(|_| call(&limiter, t0, Class::GivesWay, hold))
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let look = call(&limiter, t0, Class::Ordinary, hold).await.unwrap();
        // The look went with the next token.
        let next = Duration::from_millis(100);
        assert_eq!(look, next, "reserved tokens of the starts went first");
        let mut times = vec![Duration::ZERO, look];
        for start in starts {
            times.push(start.await.unwrap());
        }
        times.sort();
        assert_within_budget(&times, 10.0, 1);
        assert!(times.last().unwrap() <= &Duration::from_millis(610), "{times:?}");
    }

    /// Calls that give way leave a share of the bucket's burst to ordinary calls: a batch of looks
    /// arriving after a backlog of starts goes at once, and the starts take the rest as it refills.
    #[tokio::test(start_paused = true)]
    async fn calls_that_give_way_leave_a_share_of_the_burst_to_ordinary_calls() {
        let limiter = Arc::new(Limiter::new(limits(10.0, 10, 100)));
        let t0 = Instant::now();
        let spawn = |class: Class| call(&limiter, t0, class, Duration::ZERO);
        let starts: Vec<_> = (0..10).map(|_| spawn(Class::GivesWay)).collect();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let looks: Vec<_> = (0..5).map(|_| spawn(Class::Ordinary)).collect();
        for look in looks {
            assert_eq!(look.await.unwrap(), Duration::from_millis(5), "a look waited");
        }
        let mut started = Vec::new();
        for start in starts {
            started.push(start.await.unwrap());
        }
        started.sort();
        // Those beyond the kept share went at once; the looks took 5 of the kept tokens; the other
        // starts go one token's time apart once the bucket is back above the share (6 tokens later).
        let kept = (10.0 * SPARE_RESERVE).floor() as u64;
        assert!(kept >= 5, "the share must hold the looks");
        let expected: Vec<Duration> = (0..10u64)
            .map(|i| match i.checked_sub(10 - kept) {
                None => Duration::ZERO,
                Some(k) => Duration::from_millis(600 + 100 * k),
            })
            .collect();
        assert_eq!(started, expected);
    }

    /// A call that gives way goes only once the ordinary calls waiting for the budget went, so a
    /// backlog of job starts never delays a look at a running job.
    #[tokio::test(start_paused = true)]
    async fn calls_that_give_way_go_after_the_ordinary_calls_waiting() {
        let limiter = Arc::new(Limiter::new(limits(10.0, 1, 100)));
        let t0 = Instant::now();
        let (_first, _) = limiter.acquire().await;
        let spawn = |class: Class| call(&limiter, t0, class, Duration::ZERO);
        // Three looks wait for tokens (100, 200 and 300 ms); a start arriving meanwhile lets them go.
        let looks: Vec<_> = (0..3).map(|_| spawn(Class::Ordinary)).collect();
        tokio::task::yield_now().await;
        let start = spawn(Class::GivesWay);
        let mut looked = Vec::new();
        for l in looks {
            looked.push(l.await.unwrap());
        }
        let started = start.await.unwrap();
        assert!(
            looked.iter().all(|t| *t < started),
            "the start went at {started:?}, the looks at {looked:?}"
        );
        assert_eq!(looked.iter().max(), Some(&Duration::from_millis(300)));
        // It still goes, with the next token.
        assert!(started <= Duration::from_millis(410), "{started:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_never_exceeds_the_budget() {
        let limiter = Arc::new(Limiter::new(limits(5.0, 3, 100)));
        let times = send_times(Arc::clone(&limiter), 23).await;
        assert_within_budget(&times, 5.0, 3);
        // The burst goes at once, then one request every 200 ms.
        assert_eq!(times[2], Duration::ZERO);
        assert_eq!(times[3], Duration::from_millis(200));
        let last = *times.last().unwrap();
        assert!((last.as_secs_f64() - 4.0).abs() < 0.01, "{last:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn tokens_refill_after_idle_up_to_burst_only() {
        let limiter = Arc::new(Limiter::new(limits(2.0, 2, 100)));
        send_times(Arc::clone(&limiter), 2).await;
        tokio::time::sleep(Duration::from_secs(60)).await;
        let times = send_times(Arc::clone(&limiter), 4).await;
        assert_eq!(
            times,
            [
                Duration::ZERO,
                Duration::ZERO,
                Duration::from_millis(500),
                Duration::from_secs(1)
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn in_flight_cap_is_respected() {
        let limiter = Arc::new(Limiter::new(limits(1000.0, 1000, 3)));
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..20 {
            let (limiter, current, peak) = (Arc::clone(&limiter), Arc::clone(&current), Arc::clone(&peak));
            tasks.push(tokio::spawn(async move {
                let (_permit, _) = limiter.acquire().await;
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                current.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        let start = Instant::now();
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        // 20 requests of 1 s, 3 at a time: 7 rounds.
        assert_eq!(start.elapsed(), Duration::from_secs(7));
    }

    #[tokio::test(start_paused = true)]
    async fn pause_blocks_every_call_until_it_ends() {
        let limiter = Arc::new(Limiter::new(limits(100.0, 100, 10)));
        limiter.pause_until(Instant::now() + Duration::from_secs(5));
        // A shorter pause never shortens the current one.
        limiter.pause_until(Instant::now() + Duration::from_secs(1));
        let times = send_times(Arc::clone(&limiter), 4).await;
        assert!(times.iter().all(|t| *t == Duration::from_secs(5)), "{times:?}");
        let (_, waited) = limiter.acquire().await;
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn calls_held_by_a_pause_go_within_the_budget_when_it_ends() {
        // The bucket is full when the pause ends: the calls it held must not come on top of it.
        let limiter = Arc::new(Limiter::new(limits(10.0, 10, 100)));
        limiter.pause_until(Instant::now() + Duration::from_secs(1));
        let times = send_times(Arc::clone(&limiter), 30).await;
        assert!(times.iter().all(|t| *t >= Duration::from_secs(1)), "{times:?}");
        assert_within_budget(&times, 10.0, 10);
        // Nor when the pause arrives while calls wait for their tokens.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let waiting = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { send_times(limiter, 30).await })
        };
        tokio::time::sleep(Duration::from_millis(500)).await;
        limiter.pause_until(Instant::now() + Duration::from_secs(2));
        let times = waiting.await.unwrap();
        assert_within_budget(&times, 10.0, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn pause_arriving_while_waiting_for_a_token_is_honoured() {
        let limiter = Arc::new(Limiter::new(limits(1.0, 1, 10)));
        let (_p, _) = limiter.acquire().await;
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move { limiter.acquire().await.1 })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        limiter.pause_until(Instant::now() + Duration::from_secs(10));
        let waited = waiter.await.unwrap();
        assert_eq!(waited, Duration::from_millis(10_100));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_for_a_distant_token_is_refused_at_once_without_taking_it() {
        let limiter = Arc::new(Limiter::new(limits(1.0, 1, 10)));
        let (_first, _) = limiter.acquire().await;
        let start = Instant::now();
        let busy = limiter
            .acquire_within(Some(Duration::from_millis(100)), Class::Ordinary)
            .await
            .unwrap_err();
        assert_eq!(busy.retry_after, Duration::from_secs(1));
        assert_eq!(busy.waited, Duration::ZERO);
        assert_eq!(Instant::now(), start, "refused without waiting");
        // No token was taken: the next unbounded caller gets the very next one.
        let (_, waited) = limiter.acquire().await;
        assert_eq!(waited, Duration::from_secs(1));
        // A bound long enough is honoured like an unbounded wait.
        let (_, waited) = limiter
            .acquire_within(Some(Duration::from_secs(1)), Class::Ordinary)
            .await
            .unwrap();
        assert_eq!(waited, Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_is_refused_with_the_remaining_pause() {
        let limiter = Arc::new(Limiter::new(limits(100.0, 100, 10)));
        limiter.pause_until(Instant::now() + Duration::from_secs(30));
        let busy = limiter
            .acquire_within(Some(Duration::from_secs(5)), Class::Ordinary)
            .await
            .unwrap_err();
        assert_eq!(busy.retry_after, Duration::from_secs(30));
        tokio::time::sleep(Duration::from_secs(26)).await;
        let (_, waited) = limiter
            .acquire_within(Some(Duration::from_secs(5)), Class::Ordinary)
            .await
            .unwrap();
        assert_eq!(waited, Duration::from_secs(4));
    }

    #[tokio::test(start_paused = true)]
    async fn a_bounded_wait_for_a_busy_slot_gives_up_when_its_bound_passes() {
        let limiter = Arc::new(Limiter::new(limits(1000.0, 1000, 1)));
        let (held, _) = limiter.acquire().await;
        let start = Instant::now();
        let busy = limiter
            .acquire_within(Some(Duration::from_secs(2)), Class::Ordinary)
            .await
            .unwrap_err();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        assert_eq!(busy.waited, Duration::from_secs(2));
        assert_eq!(busy.retry_after, Duration::from_secs(2));
        drop(held);
        let (_, waited) = limiter
            .acquire_within(Some(Duration::ZERO), Class::Ordinary)
            .await
            .unwrap();
        assert_eq!(waited, Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_arriving_during_a_bounded_wait_refuses_it_and_returns_the_token() {
        let limiter = Arc::new(Limiter::new(limits(1.0, 1, 10)));
        let (_first, _) = limiter.acquire().await;
        let waiter = {
            let limiter = Arc::clone(&limiter);
            tokio::spawn(async move {
                limiter
                    .acquire_within(Some(Duration::from_secs(3)), Class::Ordinary)
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        limiter.pause_until(Instant::now() + Duration::from_secs(10));
        let busy = waiter.await.unwrap().unwrap_err();
        // It woke for its token at 1 s and found the pause, 9.1 s from its end.
        assert_eq!(busy.retry_after, Duration::from_millis(9_100));
        assert_eq!(busy.waited, Duration::from_secs(1));
        let mut bucket = limiter.bucket.lock().unwrap();
        bucket.refill(Instant::now());
        assert!(
            (bucket.tokens - 1.0).abs() < 1e-9,
            "token returned: {}",
            bucket.tokens
        );
    }

    #[tokio::test(start_paused = true)]
    async fn limits_change_at_run_time() {
        let limiter = Arc::new(Limiter::new(limits(1.0, 1, 1)));
        limiter.set_limits(limits(10.0, 10, 4));
        tokio::time::sleep(Duration::from_secs(2)).await;
        let times = send_times(Arc::clone(&limiter), 10).await;
        assert!(times.iter().all(|t| *t == Duration::ZERO), "{times:?}");

        // Lowering the cap while slots are in use retires them as they come back.
        let held: Vec<_> = {
            let mut v = Vec::new();
            for _ in 0..4 {
                v.push(limiter.acquire().await.0);
            }
            v
        };
        limiter.set_limits(limits(1000.0, 1000, 2));
        drop(held);
        let current = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..6 {
            let (limiter, current, peak) = (Arc::clone(&limiter), Arc::clone(&current), Arc::clone(&peak));
            tasks.push(tokio::spawn(async move {
                let (_permit, _) = limiter.acquire().await;
                let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_secs(1)).await;
                current.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2);

        // Raising it again hands the slots back.
        limiter.set_limits(limits(1000.0, 1000, 5));
        let mut held = Vec::new();
        for _ in 0..5 {
            held.push(limiter.acquire().await.0);
        }
        assert_eq!(limiter.slots.available_permits(), 0);
    }
}
