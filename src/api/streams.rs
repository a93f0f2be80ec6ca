//! The feed streams of `WindowFeed` and `WatchCase`: history entries in commit order, then new
//! ones as they are committed, until the client goes away or the gateway stops (the client is
//! told to reconnect with its cursor). It reads the store and never writes.

use tonic::Status;

use super::store_status;
use crate::store::Store;

/// A feed: history entries in commit order, then new ones as they are committed.
pub type FeedStream =
    tokio_stream::wrappers::ReceiverStream<Result<crate::proto::v1::FeedEvent, Status>>;

/// How often an idle feed looks for new entries.
const FEED_POLL: std::time::Duration = std::time::Duration::from_millis(200);

/// Streams `query`'s entries until the client goes away. Entries are read in pages of 500;
/// a slow client holds the reader back (the channel is bounded), it never skips.
pub(super) fn feed_stream(
    store: Store,
    mut query: crate::store::FeedQuery,
    shutdown: crate::supervise::Shutdown,
) -> FeedStream {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    query.limit = 500;
    tokio::spawn(shutdown.scope(async move {
        loop {
            let page = match store.feed(query.clone()).await {
                Ok(page) => page,
                Err(e) => {
                    let _ = tx.send(Err(store_status(e))).await;
                    return;
                }
            };
            let full = page.len() == query.limit;
            for item in page {
                query.after = item.position;
                let event = crate::proto::v1::FeedEvent {
                    cursor: item.position,
                    case_number: item.case_number,
                    hall_code: item.hall_code,
                    window_code: item.window_code,
                    event: Some(item.event),
                };
                if tx.send(Ok(event)).await.is_err() {
                    return; // the client went away
                }
            }
            if !full {
                let waited = crate::supervise::idle(async {
                    tokio::select! {
                        _ = tokio::time::sleep(FEED_POLL) => true,
                        _ = tx.closed() => false,
                    }
                })
                .await;
                match waited {
                    Some(true) => {}
                    Some(false) => return, // the client went away
                    None => {
                        let _ = tx
                            .send(Err(Status::unavailable(format!(
                                "the gateway is stopping; reconnect with cursor {} to go on from here",
                                query.after
                            ))))
                            .await;
                        return;
                    }
                }
            }
        }
    }));
    tokio_stream::wrappers::ReceiverStream::new(rx)
}
