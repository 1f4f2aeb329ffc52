//! Retries and circuit breaking for outbound calls.
//!
//! Retries are not a loop around the call: a failed call returns `processor::Error::Backoff`, the
//! runtime pauses only that partition and seeks back, and the record comes round again when the
//! backoff is over. So a slow or absent service never holds the stream thread for longer than one
//! call's timeout, and every other partition keeps moving meanwhile.
//!
//! All times are the task's wall clock in ms (`Context::wall_clock_time`), so the test driver
//! controls them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rand::Rng;

/// Bounded attempts with exponential backoff and jitter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Calls made before giving up, the first included.
    pub attempts: u32,
    /// Backoff after the first failure; doubled after each further one.
    pub backoff: Duration,
    /// Cap of one backoff.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, backoff: Duration::from_secs(1), max_backoff: Duration::from_secs(60) }
    }
}

impl RetryPolicy {
    /// The wait after failed attempt `n` (1-based): `backoff * 2^(n-1)`, capped, then "equal
    /// jitter" (a uniform draw from its upper half) so many instances retrying after the same
    /// outage do not arrive together.
    pub fn delay(&self, failed_attempt: u32) -> Duration {
        let exp = self.backoff.saturating_mul(1u32 << failed_attempt.saturating_sub(1).min(20)).min(self.max_backoff);
        let half = exp / 2;
        half + Duration::from_millis(rand::rng().random_range(0..=half.as_millis() as u64))
    }
}

/// What happened to each in-flight command, by idempotency key. In memory: after a restart a
/// command starts counting again, so the bound is per process lifetime (and the idempotency key
/// makes the extra calls harmless).
#[derive(Debug, Default)]
pub struct Attempts {
    by_key: HashMap<String, (u32, i64)>,
}

impl Attempts {
    /// How long `key` must still wait before its next call, if at all.
    pub fn wait(&self, key: &str, now: i64) -> Option<Duration> {
        self.by_key.get(key).and_then(|&(_, next)| (next > now).then(|| Duration::from_millis((next - now) as u64)))
    }

    /// Records a failed call; returns the backoff before the next one, or `None` when the
    /// policy's attempts are used up (and forgets the key).
    pub fn failed(&mut self, key: &str, policy: &RetryPolicy, now: i64) -> Option<Duration> {
        let e = self.by_key.entry(key.to_owned()).or_insert((0, now));
        e.0 += 1;
        if e.0 >= policy.attempts {
            self.by_key.remove(key);
            return None;
        }
        let delay = policy.delay(e.0);
        e.1 = now + delay.as_millis() as i64;
        Some(delay)
    }

    /// Delays the next call without counting an attempt (back-pressure).
    pub fn defer(&mut self, key: &str, delay: Duration, now: i64) {
        let e = self.by_key.entry(key.to_owned()).or_insert((0, now));
        e.1 = now + delay.as_millis() as i64;
    }

    pub fn done(&mut self, key: &str) {
        self.by_key.remove(key);
    }

    pub fn failures(&self, key: &str) -> u32 {
        self.by_key.get(key).map_or(0, |e| e.0)
    }
}

/// A circuit breaker per service, shared by every task of the instance.
///
/// Closed: calls go through; `failure_threshold` consecutive failures open it. Open: no call is
/// made for `open_for`, records wait instead of piling timeouts onto a service that is down.
/// Then one probe goes through (half-open): success closes it, failure opens it again.
#[derive(Debug)]
pub struct CircuitBreaker {
    service: String,
    failure_threshold: u32,
    open_for: Duration,
    state: Mutex<State>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Closed { failures: u32 },
    Open { until: i64 },
    HalfOpen,
}

impl CircuitBreaker {
    pub fn new(service: &str, failure_threshold: u32, open_for: Duration) -> Self {
        Self {
            service: service.to_owned(),
            failure_threshold: failure_threshold.max(1),
            open_for,
            state: Mutex::new(State::Closed { failures: 0 }),
        }
    }

    pub fn state(&self) -> State {
        *self.state.lock().expect("breaker lock")
    }

    /// `Ok` if a call may go out now; else how long to wait.
    pub fn permit(&self, now: i64) -> Result<(), Duration> {
        let mut s = self.state.lock().expect("breaker lock");
        match *s {
            State::Closed { .. } => Ok(()),
            State::Open { until } if now < until => Err(Duration::from_millis((until - now) as u64)),
            State::Open { .. } => {
                tracing::info!(service = %self.service, "circuit half-open: sending one probe");
                *s = State::HalfOpen;
                Ok(())
            }
            // The probe is out (or was lost with a rolled-back task): let the next caller probe
            // after a short wait rather than never.
            State::HalfOpen => {
                *s = State::Open { until: now + (self.open_for.as_millis() as i64 / 4).max(1) };
                Err(self.open_for / 4)
            }
        }
    }

    pub fn record(&self, ok: bool, now: i64) {
        let mut s = self.state.lock().expect("breaker lock");
        *s = match (*s, ok) {
            (_, true) => {
                if !matches!(*s, State::Closed { .. }) {
                    tracing::info!(service = %self.service, "circuit closed: the service answers again");
                }
                State::Closed { failures: 0 }
            }
            (State::Closed { failures }, false) if failures + 1 < self.failure_threshold => State::Closed { failures: failures + 1 },
            (_, false) => {
                tracing::warn!(service = %self.service, open_for = ?self.open_for, "circuit open: calls wait instead of failing");
                State::Open { until: now + self.open_for.as_millis() as i64 }
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn breaker_opens_after_the_threshold_probes_once_and_closes_on_success() {
        let b = CircuitBreaker::new("svc", 3, Duration::from_millis(1000));
        for _ in 0..2 {
            b.record(false, 0);
            assert!(b.permit(0).is_ok());
        }
        b.record(false, 0);
        assert_eq!(b.permit(10), Err(Duration::from_millis(990)));
        assert!(b.permit(1000).is_ok(), "probe after the open period");
        assert!(b.permit(1001).is_err(), "only one probe at a time");
        b.record(false, 1002);
        assert!(b.permit(1500).is_err(), "a failed probe opens it again");
        assert!(b.permit(2002).is_ok());
        b.record(true, 2003);
        assert_eq!(b.state(), State::Closed { failures: 0 });
    }

    #[test]
    fn retries_are_bounded_and_back_off_with_jitter() {
        let p = RetryPolicy { attempts: 4, backoff: Duration::from_millis(100), max_backoff: Duration::from_millis(300) };
        let mut a = Attempts::default();
        let d1 = a.failed("k", &p, 0).unwrap();
        assert!((50..=100).contains(&(d1.as_millis() as u64)), "{d1:?}");
        assert_eq!(a.wait("k", 0), Some(d1));
        let d2 = a.failed("k", &p, 1000).unwrap();
        assert!((100..=200).contains(&(d2.as_millis() as u64)), "{d2:?}");
        let d3 = a.failed("k", &p, 2000).unwrap();
        assert!((150..=300).contains(&(d3.as_millis() as u64)), "capped: {d3:?}");
        assert_eq!(a.failed("k", &p, 3000), None, "the fourth failure uses up the attempts");
        assert_eq!(a.failures("k"), 0);
    }
}
