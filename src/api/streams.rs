//! The feed streams of `WindowFeed` and `WatchCase`: history entries in commit order, then new
//! ones as they are committed, until the client goes away or the gateway stops (the client is
//! told to reconnect with its cursor). It reads the store and never writes.
//!
//! A stream reads when the store signals a commit that wrote history
//! ([`crate::store::HistorySignal`]), not on a timer; on PostgreSQL, where other replicas
//! commit too, it also looks every [`SHARED_POLL`]. What a stream holds is bounded: one page
//! read from the store and a channel of [`QUEUED`] events. A client that stops reading fills
//! them and the stream's reader waits: it reads nothing more until the client takes events
//! (HTTP/2 flow control carries the client's pace back here), and never skips.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::mpsc;
use tonic::Status;

use super::store_status;
use crate::gateway::Gateway;
use crate::limits::FeedBuffer;
use crate::proto::v1::FeedEvent;

/// Events read per look at the store.
const PAGE: usize = 500;

/// Events a stream queues for its client.
pub const QUEUED: usize = 256;

/// How often a stream on a store shared by replicas looks for history they committed.
pub const SHARED_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// The most feed events one stream holds in the gateway: a page and the queue.
pub const HELD_PER_STREAM: usize = PAGE + QUEUED;

/// A feed: history entries in commit order, then new ones as they are committed. Counts what
/// it holds in the gateway's [`crate::limits::Limits::feed_buffered`].
pub struct FeedStream {
    rx: mpsc::Receiver<Result<FeedEvent, Status>>,
    buffer: FeedBuffer,
}

impl tokio_stream::Stream for FeedStream {
    type Item = Result<FeedEvent, Status>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.rx.poll_recv(cx);
        if let Poll::Ready(Some(_)) = &polled {
            self.buffer.add(-1);
        }
        polled
    }
}

impl Drop for FeedStream {
    fn drop(&mut self) {
        // Closed first: nothing more enters, and the reader's next send fails and it stops.
        self.rx.close();
        self.buffer.add(-(self.rx.len() as i64));
    }
}

/// Streams `query`'s entries until the client goes away. Entries are read in pages; a slow
/// client holds the reader back (the channel is bounded), it never skips.
pub(super) fn feed_stream(gateway: &Gateway, mut query: crate::store::FeedQuery) -> FeedStream {
    let (tx, rx) = mpsc::channel(QUEUED);
    let buffer = gateway.limits.feed_buffer();
    let (store, shutdown, held) = (
        gateway.store.clone(),
        gateway.shutdown.clone(),
        buffer.clone(),
    );
    query.limit = PAGE;
    let mut committed = store.history().subscribe();
    let poll = store.shared().then_some(SHARED_POLL);
    tokio::spawn(shutdown.scope(async move {
        loop {
            // Marked seen before the read: a commit during it wakes the next wait at once.
            let _ = committed.borrow_and_update();
            let page = match store.feed(query.clone()).await {
                Ok(page) => page,
                Err(e) => {
                    send(&tx, &held, Err(store_status(e))).await;
                    return;
                }
            };
            let full = page.len() == query.limit;
            // Counted from here: the page is held until its last event is queued.
            let mut left = page.len() as i64;
            held.add(left);
            for item in page {
                query.after = item.position;
                let event = FeedEvent {
                    cursor: item.position,
                    case_number: item.case_number,
                    hall_code: item.hall_code,
                    window_code: item.window_code,
                    event: Some(item.event),
                };
                if tx.send(Ok(event)).await.is_err() {
                    held.add(-left);
                    return; // the client went away
                }
                left -= 1;
            }
            if full {
                continue;
            }
            let waited = crate::supervise::idle(async {
                let timer = async {
                    match poll {
                        Some(every) => tokio::time::sleep(every).await,
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    changed = committed.changed() => changed.is_ok(),
                    _ = timer => true,
                    _ = tx.closed() => false,
                }
            })
            .await;
            match waited {
                Some(true) => {}
                Some(false) => return, // the client went away
                None => {
                    let stopping = Status::unavailable(format!(
                        "the gateway is stopping; reconnect with cursor {} to go on from here",
                        query.after
                    ));
                    send(&tx, &held, Err(stopping)).await;
                    return;
                }
            }
        }
    }));
    FeedStream { rx, buffer }
}

/// Sends the stream's last item (an error), counted in `held` while it waits in the channel.
async fn send(
    tx: &mpsc::Sender<Result<FeedEvent, Status>>,
    held: &FeedBuffer,
    item: Result<FeedEvent, Status>,
) {
    held.add(1);
    if tx.send(item).await.is_err() {
        held.add(-1);
    }
}
