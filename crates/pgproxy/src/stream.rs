//! One byte stream type for both sides of the proxy: plain TCP, TLS that
//! the gateway accepted from a client, or TLS it opened to the server.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A connection of either side.
pub(crate) enum PgStream {
    Plain(TcpStream),
    /// TLS accepted from a client.
    Accepted(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    /// TLS opened to the server.
    Connected(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for PgStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            PgStream::Accepted(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
            PgStream::Connected(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PgStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PgStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            PgStream::Accepted(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
            PgStream::Connected(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            PgStream::Accepted(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
            PgStream::Connected(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PgStream::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            PgStream::Accepted(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
            PgStream::Connected(stream) => Pin::new(stream.as_mut()).poll_shutdown(cx),
        }
    }
}
