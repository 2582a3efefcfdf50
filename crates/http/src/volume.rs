//! Counts the response bytes sent to each identity, for the data-volume
//! signal.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Frame, SizeHint};
use stepgate_core::IdentityName;
use stepgate_engine::Engine;

use crate::Body;

/// A response body that reports the bytes it handed to the connection when
/// it ends or is dropped (the client went away), whichever comes first.
pub(crate) struct CountedBody {
    inner: Body,
    engine: Arc<Engine>,
    identity: IdentityName,
    bytes: u64,
    reported: bool,
}

impl CountedBody {
    pub(crate) fn new(inner: Body, engine: Arc<Engine>, identity: IdentityName) -> Self {
        Self {
            inner,
            engine,
            identity,
            bytes: 0,
            reported: false,
        }
    }

    fn report(&mut self) {
        if !self.reported {
            self.reported = true;
            self.engine.record_volume(&self.identity, self.bytes, 0);
        }
    }
}

impl hyper::body::Body for CountedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.bytes = self.bytes.saturating_add(data.len() as u64);
                }
            }
            Poll::Ready(None) | Poll::Ready(Some(Err(_))) => self.report(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for CountedBody {
    fn drop(&mut self) {
        self.report();
    }
}
