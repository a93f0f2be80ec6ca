//! The "eventually" wait: a condition checked again and again until it holds or a deadline
//! passes, when the test fails saying what it waited for. A test waits on what it can observe,
//! never for a fixed time.

use std::fmt::Display;
use std::future::Future;
use std::time::{Duration, Instant};

/// How often a condition is checked again.
pub const POLL: Duration = Duration::from_millis(50);

/// Checks `probe` every [`POLL`] until it returns `Some`, and returns what it found; panics with
/// "`what` within `within`" when the deadline passes first.
pub async fn eventually<T, F, Fut>(what: impl Display, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = probe().await {
            return found;
        }
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(POLL).await;
    }
}

/// [`eventually`] for a condition that only holds or not.
pub async fn until<F, Fut>(what: impl Display, within: Duration, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    eventually(what, within, || {
        let check = holds();
        async move { check.await.then_some(()) }
    })
    .await
}
