//! The request budget of a client: a token bucket (rate and burst), a cap on requests in flight, and a
//! pause that a 429 answer imposes on every call of the client.
//!
//! Tokens are reserved: a caller that finds the bucket empty takes a token "on credit" and sleeps until
//! it would have been refilled, so waiters are served in order and the rate never exceeds
//! `burst + rate * t` requests over any span `t`. The in-flight permit is taken first, so a request
//! that waits for a slot does not burn a token meanwhile. All times are `tokio::time` instants, which
//! lets tests run on a paused clock.

use std::sync::{
    Arc, Mutex, PoisonError,
    atomic::{AtomicUsize, Ordering},
};

use tokio::{
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Duration, Instant},
};

use super::Limits;

/// Shared by every clone of a client.
#[derive(Debug)]
pub(crate) struct Limiter {
    bucket: Mutex<Bucket>,
    slots: Arc<Semaphore>,
    /// The current in-flight cap; `slots` holds `max_in_flight - in_use - owed` permits.
    max_in_flight: Mutex<usize>,
    /// Permits to retire when they come back (after the cap was lowered while they were in use).
    owed: Arc<AtomicUsize>,
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
        }
    }

    /// Changes the budget. Tokens above the new burst are dropped; a lower in-flight cap takes effect as
    /// requests complete.
    pub(crate) fn set_limits(&self, limits: Limits) {
        let limits = limits.sanitized();
        {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            bucket.refill(Instant::now());
            bucket.rate = limits.requests_per_second;
            bucket.burst = f64::from(limits.burst);
            bucket.tokens = bucket.tokens.min(bucket.burst);
        }
        let new_max = limits.max_in_flight.min(Semaphore::MAX_PERMITS);
        let mut max = self.max_in_flight.lock().unwrap_or_else(PoisonError::into_inner);
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
        let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
        if bucket.paused_until.is_none_or(|current| current < until) {
            bucket.paused_until = Some(until);
        }
    }

    /// Waits for an in-flight slot and a token, and for any pause to end. Returns the permit and the
    /// time spent waiting (zero when nothing had to be waited for).
    pub(crate) async fn acquire(&self) -> (Permit, Duration) {
        let started = Instant::now();
        let mut waited = false;
        // The semaphore is never closed; should it be, requests go on unthrottled rather than fail.
        let permit = match Arc::clone(&self.slots).try_acquire_owned() {
            Ok(permit) => Some(permit),
            Err(_) => {
                waited = true;
                Arc::clone(&self.slots).acquire_owned().await.ok()
            }
        };
        let permit = Permit {
            permit,
            owed: Arc::clone(&self.owed),
        };

        // Reserve a token, then sleep until it is ours and no pause is in force.
        let mut ready_at = {
            let mut bucket = self.bucket.lock().unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            bucket.refill(now);
            bucket.tokens -= 1.0;
            let token_at = if bucket.tokens >= 0.0 {
                now
            } else {
                now + Duration::from_secs_f64((-bucket.tokens / bucket.rate).min(MAX_TOKEN_WAIT_SECS))
            };
            token_at.max(bucket.paused_until.unwrap_or(now))
        };
        loop {
            if ready_at > Instant::now() {
                waited = true;
                tokio::time::sleep_until(ready_at).await;
            }
            // A 429 may have arrived while we slept: honour it too.
            let paused_until = self
                .bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .paused_until;
            match paused_until {
                Some(until) if until > Instant::now() => ready_at = until,
                _ => break,
            }
        }
        (permit, if waited { started.elapsed() } else { Duration::ZERO })
    }
}

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
