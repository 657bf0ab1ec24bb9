//! A key's live state in this process: its revocation signal, its rate limit, and its
//! socket and subscription budgets. Slots are taken with a compare-and-swap that never
//! passes the limit, and given back when their permit is dropped, however the socket
//! ends.
//!
//! Kept hand-written on purpose: a budget is one atomic counter with a ceiling, and a
//! semaphore would have to hold one permit per topic to give back part of one.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;

use super::limits::RateLimit;
use super::GuardConfig;

/// A key's live state in this process: the revocation signal its sockets wait on, its
/// rate limit, and its socket and subscription counts.
pub struct KeySession {
    pub(super) revoked: watch::Sender<bool>,
    pub(super) rate: RateLimit,
    sockets: AtomicUsize,
    subscriptions: AtomicUsize,
    max_sockets: usize,
    max_subscriptions: usize,
}

impl KeySession {
    /// A session with a full rate bucket and no socket open.
    pub(super) fn new(config: &GuardConfig) -> Self {
        Self {
            revoked: watch::channel(false).0,
            rate: RateLimit::new(config.rate_per_second, config.burst),
            sockets: AtomicUsize::new(0),
            subscriptions: AtomicUsize::new(0),
            max_sockets: config.max_sockets_per_key,
            max_subscriptions: config.max_subscriptions_per_key,
        }
    }

    /// Completes when the key is revoked or expires (at once if it already is).
    pub fn until_revoked(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut revoked = self.revoked.subscribe();
        async move {
            let _ = revoked.wait_for(|r| *r).await;
        }
    }

    /// Whether the key was revoked (or expired) while this process knew it.
    pub(super) fn is_revoked(&self) -> bool {
        *self.revoked.borrow()
    }

    /// One of the key's socket slots, or `None` when all are taken.
    pub(super) fn open_socket(self: &Arc<Self>) -> Option<SocketPermit> {
        let taken = self
            .sockets
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max_sockets).then_some(n + 1)
            })
            .is_ok();
        taken.then(|| SocketPermit(self.clone()))
    }

    /// A budget of subscriptions for one socket, drawn from the key's.
    pub fn subscription_budget(self: &Arc<Self>) -> SubscriptionBudget {
        SubscriptionBudget {
            session: self.clone(),
            held: 0,
        }
    }
}

/// One of the key's socket slots, given back when dropped.
pub struct SocketPermit(Arc<KeySession>);

impl Drop for SocketPermit {
    fn drop(&mut self) {
        self.0.sockets.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The subscriptions one socket holds of its key's budget, given back when dropped.
pub struct SubscriptionBudget {
    session: Arc<KeySession>,
    held: usize,
}

impl SubscriptionBudget {
    /// Makes this socket hold exactly `n` of the key's subscriptions (its topic count);
    /// `false`, holding what it held, if the key has not that many left.
    pub fn settle(&mut self, n: usize) -> bool {
        if n < self.held {
            self.session
                .subscriptions
                .fetch_sub(self.held - n, Ordering::AcqRel);
            self.held = n;
            return true;
        }
        let more = n - self.held;
        let max = self.session.max_subscriptions;
        let taken = self
            .session
            .subscriptions
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held + more <= max).then_some(held + more)
            })
            .is_ok();
        if taken {
            self.held = n;
        }
        taken
    }
}

impl Drop for SubscriptionBudget {
    fn drop(&mut self) {
        self.session
            .subscriptions
            .fetch_sub(self.held, Ordering::AcqRel);
    }
}
