//! Broker sessions kept alive: the one reconnect loop every long-lived user of the bus runs in
//! (the outbox relay, the results consumer, the adapters' runtime), the backoff between tries,
//! and the confirming channel they publish on. A session connects, works until the broker goes
//! away, and says which of the two ended it; this module only waits and starts the next one. It
//! never decides what is published or consumed.

use std::future::Future;
use std::time::Duration;

use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection};
use tracing::warn;

/// The wait between tries: 500 ms, doubling up to 30 s; back to 500 ms once a try got through.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first wait, and the wait again after a success.
    pub const FIRST: Duration = Duration::from_millis(500);
    /// The longest wait.
    pub const MAX: Duration = Duration::from_secs(30);

    /// What the next [`Backoff::wait`] waits.
    pub fn next(&self) -> Duration {
        self.next
    }

    /// The next wait is the first one again (a try got through).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }

    /// Waits the current step, and doubles the next one.
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.advance();
    }

    fn advance(&mut self) {
        self.next = (self.next * 2).min(Self::MAX);
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { next: Self::FIRST }
    }
}

/// How a broker session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// It could not connect or set up (the broker is down, refuses us, a declaration failed):
    /// the wait before the next try grows.
    Unreachable(String),
    /// It was connected and working until the broker went away: the next try comes after the
    /// first, short wait.
    Lost(String),
}

/// Runs `session` again and again, for as long as the caller polls this future, until the
/// process stops ([`crate::supervise::Shutdown`]; the session itself ends at its next idle
/// wait): between two sessions it logs why the last one ended and waits the [`Backoff`].
/// `worker` names the caller in the log (`outbox relay`, `results consumer`, `adapter`).
pub async fn reconnecting<F, Fut>(worker: &'static str, mut session: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Ended>,
{
    let mut backoff = Backoff::default();
    loop {
        let ended = session().await;
        if crate::supervise::stopping() {
            return;
        }
        match ended {
            Ended::Lost(e) => {
                backoff.reset();
                warn!(worker, error = %e, retry_in_ms = backoff.next().as_millis() as u64, "lost RabbitMQ; reconnecting");
            }
            Ended::Unreachable(e) => {
                warn!(worker, error = %e, retry_in_ms = backoff.next().as_millis() as u64, "cannot reach RabbitMQ; trying again");
            }
        }
        if crate::supervise::idle(backoff.wait()).await.is_none() {
            return;
        }
    }
}

/// A channel of `connection` in confirm mode: every publish on it is confirmed by the broker.
pub async fn confirming_channel(connection: &Connection) -> Result<Channel, String> {
    let channel = connection
        .create_channel()
        .await
        .map_err(|e| e.to_string())?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    Ok(channel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_doubles_to_its_cap_and_starts_over_after_a_success() {
        let mut b = Backoff::default();
        let mut seen = Vec::new();
        for _ in 0..9 {
            seen.push(b.next().as_millis());
            b.advance();
        }
        assert_eq!(
            seen,
            [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000]
        );
        b.reset();
        assert_eq!(b.next(), Backoff::FIRST);
    }
}
