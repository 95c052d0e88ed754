//! Pieces the fake ticket systems (ServiceNow, Zendesk) share: an injectable clock, fixed-window
//! rate limits, and scripted faults (statuses, slow replies, replies held until released).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;

/// Wall-clock time plus an offset the test can advance (TTLs, windows).
#[derive(Debug, Default)]
pub struct FakeClock {
    offset_ms: AtomicI64,
}

impl FakeClock {
    pub fn now(&self) -> SystemTime {
        let off = self.offset_ms.load(Ordering::SeqCst);
        if off >= 0 {
            SystemTime::now() + Duration::from_millis(off as u64)
        } else {
            SystemTime::now() - Duration::from_millis((-off) as u64)
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, d: Duration) {
        self.offset_ms
            .fetch_add(d.as_millis() as i64, Ordering::SeqCst);
    }

    pub fn unix_secs_f64(&self) -> f64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    }
}

/// At most `limit` admitted requests per fixed `window` (aligned to the Unix epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub limit: u32,
    pub window: Duration,
}

/// A rate-limit decision.
#[derive(Debug, Clone, Copy)]
pub enum Admission {
    Admitted {
        remaining: u32,
        reset_unix: u64,
    },
    /// Denied; seconds until the window resets (rounded up, at least 1).
    Denied {
        retry_after_secs: u64,
        reset_unix: u64,
    },
}

#[derive(Debug, Default)]
pub struct Window {
    index: u64,
    count: u32,
    pub admitted: u64,
    pub denied: u64,
}

impl Window {
    pub fn admit(&mut self, limit: RateLimit, now_unix: f64) -> Admission {
        let w = limit.window.as_secs_f64().max(0.001);
        let index = (now_unix / w).floor() as u64;
        if index != self.index {
            self.index = index;
            self.count = 0;
        }
        let end = (index + 1) as f64 * w;
        let reset_unix = end.ceil() as u64;
        if self.count < limit.limit {
            self.count += 1;
            self.admitted += 1;
            Admission::Admitted {
                remaining: limit.limit - self.count,
                reset_unix,
            }
        } else {
            self.denied += 1;
            Admission::Denied {
                retry_after_secs: ((end - now_unix).ceil() as u64).max(1),
                reset_unix,
            }
        }
    }
}

/// Which requests a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Create,
    Lookup,
    Any,
}

/// A scripted fault.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status (and the system's error body) without doing anything.
    Status(u16),
    /// Do the work (create the ticket), then answer with this status.
    AfterCreate(u16),
    /// Answer after this delay.
    Delay(Duration),
}

/// Fault state shared by a fake's handlers.
#[derive(Debug, Default)]
pub struct Faults {
    script: VecDeque<(Route, Fault)>,
    /// Every `n`th request (any route) answers `status`.
    every: Option<(u64, u16)>,
    seen: u64,
    pub delay: Duration,
    hold: Option<Arc<Notify>>,
    pub held: u64,
}

impl Faults {
    pub fn push(&mut self, route: Route, fault: Fault) {
        self.script.push_back((route, fault));
    }

    pub fn every(&mut self, n: u64, status: u16) {
        self.every = (n > 0).then_some((n, status));
    }

    /// The fault for a request on `route`, if one applies.
    pub fn take(&mut self, route: Route) -> Option<Fault> {
        self.seen += 1;
        if let Some(i) = self
            .script
            .iter()
            .position(|(r, _)| *r == route || *r == Route::Any)
        {
            return self.script.remove(i).map(|(_, f)| f);
        }
        match self.every {
            Some((n, status)) if self.seen.is_multiple_of(n) => Some(Fault::Status(status)),
            _ => None,
        }
    }

    /// Holds create replies (after the ticket exists) until [`Faults::release`].
    pub fn hold(&mut self) {
        self.hold = Some(Arc::new(Notify::new()));
    }

    pub fn release(&mut self) {
        if let Some(n) = self.hold.take() {
            n.notify_waiters();
        }
    }

    pub fn hold_handle(&self) -> Option<Arc<Notify>> {
        self.hold.clone()
    }
}
