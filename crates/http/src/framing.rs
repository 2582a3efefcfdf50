//! A guard under the HTTP/1 parser that rejects requests carrying both
//! `Content-Length` and `Transfer-Encoding`.
//!
//! hyper accepts such a request and frames it by `Transfer-Encoding`, as
//! RFC 9112 §6.3 allows, and drops the `Content-Length` before the
//! application sees the headers. A proxy that forwards such requests is the
//! classic setting for request smuggling, so the gateway refuses them with
//! 400 instead. The guard watches the bytes hyper reads, tracks message
//! boundaries (fixed-length and chunked bodies), and when a request head
//! has both headers it withholds the end of that head, writes a 400 and
//! ends the connection, so hyper never sees the request. HTTP/2 connections
//! and anything the guard cannot follow are passed through untouched; hyper
//! rejects what it cannot parse.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

const BOTH_LENGTHS: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\n\
cache-control: no-store\r\n\
connection: close\r\n\
content-length: 93\r\n\r\n\
{\"error\":\"bad_request\",\"message\":\"both Content-Length and Transfer-Encoding: send only one\"}\n";

const BARE_LF: &[u8] = b"HTTP/1.1 400 Bad Request\r\n\
content-type: application/json\r\n\
cache-control: no-store\r\n\
connection: close\r\n\
content-length: 89\r\n\r\n\
{\"error\":\"bad_request\",\"message\":\"request head lines must end with CRLF, not a bare LF\"}\n";

/// Where the guard is in the byte stream.
#[derive(Debug)]
enum State {
    /// Collecting a request head.
    Head(Vec<u8>),
    /// Skipping a fixed-length body.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize(Vec<u8>),
    /// Skipping chunk data plus its CRLF.
    ChunkData(u64),
    /// Reading trailer lines after the last chunk.
    Trailers(Vec<u8>),
    /// Not watching any more.
    Passthrough,
    /// Writing a rejection; `usize` bytes of it are written.
    Rejecting(&'static [u8], usize),
    /// The rejection is written; reads return end of stream.
    Closed,
}

/// Wraps a client connection; see the module documentation.
pub(crate) struct FramingGuard<S> {
    inner: S,
    state: State,
    max_head: usize,
    peer: SocketAddr,
}

impl<S> FramingGuard<S> {
    pub(crate) fn new(inner: S, max_head: usize, peer: SocketAddr) -> Self {
        Self {
            inner,
            state: State::Head(Vec::new()),
            max_head,
            peer,
        }
    }

    /// Follows `bytes` through the message framing. Returns how many of them
    /// may go to hyper: all of them, or fewer when a request is rejected.
    fn observe(&mut self, bytes: &[u8]) -> usize {
        let mut index = 0;
        while index < bytes.len() {
            let rest = &bytes[index..];
            match &mut self.state {
                State::Passthrough | State::Rejecting(..) | State::Closed => return bytes.len(),
                State::Head(head) => {
                    let Some(end) = find_head_end(head, rest) else {
                        head.extend_from_slice(rest);
                        if head.len() > self.max_head {
                            // hyper answers 431 for oversize heads itself.
                            self.state = State::Passthrough;
                        }
                        return bytes.len();
                    };
                    head.extend_from_slice(&rest[..end]);
                    match classify_head(head) {
                        Framing::Reject(answer) => {
                            tracing::warn!(client.addr = %self.peer, "request with ambiguous framing rejected");
                            self.state = State::Rejecting(answer, 0);
                            return index;
                        }
                        Framing::None => self.state = State::Head(Vec::new()),
                        Framing::Length(0) => self.state = State::Head(Vec::new()),
                        Framing::Length(length) => self.state = State::Body(length),
                        Framing::Chunked => self.state = State::ChunkSize(Vec::new()),
                        Framing::Unknown => self.state = State::Passthrough,
                    }
                    index += end;
                }
                State::Body(remaining) => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::Head(Vec::new());
                    }
                    index += take;
                }
                State::ChunkSize(line) => match rest.iter().position(|&b| b == b'\n') {
                    None => {
                        line.extend_from_slice(rest);
                        if line.len() > 1024 {
                            self.state = State::Passthrough;
                        }
                        return bytes.len();
                    }
                    Some(newline) => {
                        line.extend_from_slice(&rest[..=newline]);
                        self.state = match parse_chunk_size(line) {
                            Some(0) => State::Trailers(Vec::new()),
                            // Data plus the CRLF that ends it.
                            Some(size) => State::ChunkData(size.saturating_add(2)),
                            None => State::Passthrough,
                        };
                        index += newline + 1;
                    }
                },
                State::ChunkData(remaining) => {
                    let take = usize::try_from(*remaining)
                        .unwrap_or(usize::MAX)
                        .min(rest.len());
                    *remaining -= take as u64;
                    if *remaining == 0 {
                        self.state = State::ChunkSize(Vec::new());
                    }
                    index += take;
                }
                State::Trailers(line) => match rest.iter().position(|&b| b == b'\n') {
                    None => {
                        line.extend_from_slice(rest);
                        if line.len() > self.max_head {
                            self.state = State::Passthrough;
                        }
                        return bytes.len();
                    }
                    Some(newline) => {
                        let blank = line.is_empty() || line.as_slice() == b"\r";
                        line.clear();
                        if blank && rest[..newline].iter().all(|&b| b == b'\r') {
                            self.state = State::Head(Vec::new());
                        }
                        index += newline + 1;
                    }
                },
            }
        }
        bytes.len()
    }
}

/// How a request head frames its body.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    None,
    Length(u64),
    Chunked,
    /// Rejected, with the answer to send.
    Reject(&'static [u8]),
    /// Something the guard does not follow; hyper decides.
    Unknown,
}

/// Finds where the head ends (just after the blank line) within `rest`,
/// given the bytes of the head already collected.
fn find_head_end(head: &[u8], rest: &[u8]) -> Option<usize> {
    // Look across the boundary: the last 3 bytes of `head` and all of `rest`.
    let carry = head.len().min(3);
    let mut window = head[head.len() - carry..].to_vec();
    window.extend_from_slice(rest);
    let skip_leading = head.iter().all(|&b| b == b'\r' || b == b'\n');
    let mut search_from = 0;
    if skip_leading {
        // Empty lines before the request line are ignored (RFC 9112 §2.2).
        search_from = window.iter().position(|&b| b != b'\r' && b != b'\n')?;
    }
    // The head ends at the first empty line, whether its lines end in CRLF
    // or, as hyper also accepts, in a bare LF.
    let tail = &window[search_from..];
    let crlf = tail
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4);
    let lf = tail.windows(2).position(|w| w == b"\n\n").map(|at| at + 2);
    let mixed = tail
        .windows(3)
        .position(|w| w == b"\n\r\n")
        .map(|at| at + 3);
    [crlf, lf, mixed]
        .into_iter()
        .flatten()
        .min()
        .map(|end| search_from + end - carry)
}

fn classify_head(head: &[u8]) -> Framing {
    // hyper accepts a bare LF as a line end. A parser in front or behind
    // that does not would read the headers differently, and this guard
    // would too, so such heads are refused outright.
    let trimmed = head
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(head.len());
    let bare_lf = head
        .iter()
        .enumerate()
        .skip(trimmed)
        .any(|(at, &b)| b == b'\n' && (at == 0 || head.get(at - 1) != Some(&b'\r')));
    if bare_lf {
        return Framing::Reject(BARE_LF);
    }
    let Ok(text) = std::str::from_utf8(head) else {
        return Framing::Unknown;
    };
    let mut lengths = Vec::new();
    let mut transfer_encoding = false;
    let mut upgrade = false;
    let mut lines = text.trim_start_matches(['\r', '\n']).split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    // The HTTP/2 preface reads as a head with this request line; hyper
    // takes the connection from there.
    if request_line.starts_with("CONNECT ") || request_line.as_bytes().starts_with(H2_PREFACE) {
        return Framing::Unknown;
    }
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim().to_ascii_lowercase();
        match name.as_str() {
            "content-length" => lengths.push(value.trim().to_owned()),
            "transfer-encoding" => transfer_encoding = true,
            "upgrade" => upgrade = true,
            _ => {}
        }
    }
    if transfer_encoding && !lengths.is_empty() {
        return Framing::Reject(BOTH_LENGTHS);
    }
    if upgrade {
        return Framing::Unknown;
    }
    if transfer_encoding {
        return Framing::Chunked;
    }
    match lengths.as_slice() {
        [] => Framing::None,
        [single] => single
            .parse()
            .map(Framing::Length)
            .unwrap_or(Framing::Unknown),
        _ => Framing::Unknown,
    }
}

fn parse_chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text
        .trim_end_matches(['\r', '\n'])
        .split(';')
        .next()?
        .trim();
    u64::from_str_radix(size, 16).ok()
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for FramingGuard<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match this.state {
                State::Rejecting(answer, written) => {
                    let remaining = answer.get(written..).unwrap_or_default();
                    if remaining.is_empty() {
                        this.state = State::Closed;
                        continue;
                    }
                    match Pin::new(&mut this.inner).poll_write(cx, remaining) {
                        Poll::Ready(Ok(n)) => this.state = State::Rejecting(answer, written + n),
                        Poll::Ready(Err(_)) => this.state = State::Closed,
                        Poll::Pending => return Poll::Pending,
                    }
                }
                State::Closed => {
                    let _ = Pin::new(&mut this.inner).poll_shutdown(cx);
                    return Poll::Ready(Ok(()));
                }
                _ => break,
            }
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let allowed = this.observe(&buf.filled()[before..]);
                let read = buf.filled().len() - before;
                if allowed < read {
                    buf.set_filled(before + allowed);
                    if allowed == 0 {
                        // Nothing to hand over: start writing the rejection.
                        return Pin::new(this).poll_read(cx, buf);
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for FramingGuard<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.state, State::Rejecting(..) | State::Closed) {
            // hyper's own answers to a rejected connection are dropped.
            return Poll::Ready(Ok(data.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if matches!(self.state, State::Rejecting(..) | State::Closed) {
            return Poll::Ready(Ok(bufs.iter().map(|b| b.len()).sum()));
        }
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> FramingGuard<()> {
        FramingGuard::new((), 16 * 1024, "127.0.0.1:1".parse().unwrap())
    }

    fn feed(guard: &mut FramingGuard<()>, stream: &[u8], chunk: usize) -> usize {
        let mut passed = 0;
        for piece in stream.chunks(chunk) {
            let allowed = guard.observe(piece);
            passed += allowed;
            if allowed < piece.len() {
                break;
            }
        }
        passed
    }

    #[test]
    fn rejection_lengths_match_headers() {
        for answer in [BOTH_LENGTHS, BARE_LF] {
            let text = std::str::from_utf8(answer).unwrap();
            let (_, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                text.contains(&format!("content-length: {}\r\n", body.len())),
                "{text}"
            );
        }
    }

    #[test]
    fn bare_lf_heads_rejected() {
        let streams: [&[u8]; 3] = [
            b"POST / HTTP/1.1\nHost: a\nContent-Length: 4\nTransfer-Encoding: chunked\n\n0\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\nTransfer-Encoding: chunked\r\n\r\n",
            b"GET / HTTP/1.1\nHost: a\n\n",
        ];
        for stream in streams {
            for chunk in [1, 5, stream.len()] {
                let mut guard = guard();
                feed(&mut guard, stream, chunk);
                assert!(
                    matches!(guard.state, State::Rejecting(answer, 0) if answer == BARE_LF),
                    "chunk {chunk}: {:?} for {:?}",
                    guard.state,
                    String::from_utf8_lossy(stream)
                );
            }
        }
    }

    #[test]
    fn both_headers_withheld_at_head_end() {
        let stream = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n0\r\n\r\n";
        let head_end = stream.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        for chunk in [1, 3, 7, stream.len()] {
            let mut guard = guard();
            let passed = feed(&mut guard, stream, chunk);
            assert!(passed < head_end, "chunk {chunk}: {passed} bytes passed");
            assert!(matches!(guard.state, State::Rejecting(_, 0)));
        }
    }

    #[test]
    fn keep_alive_sequence_followed() {
        let mut stream = Vec::new();
        stream.extend_from_slice(b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello");
        stream.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n0\r\nTrailer: 1\r\n\r\n");
        stream.extend_from_slice(b"\r\nGET /c HTTP/1.1\r\nHost: a\r\n\r\n");
        let good_len = stream.len();
        stream.extend_from_slice(
            b"POST /d HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n",
        );
        for chunk in [1, 2, 5, 64] {
            let mut guard = guard();
            let passed = feed(&mut guard, &stream, chunk);
            assert!(passed >= good_len, "chunk {chunk}: stopped at {passed}");
            assert!(passed < stream.len());
            assert!(
                matches!(guard.state, State::Rejecting(_, 0)),
                "chunk {chunk}"
            );
        }
    }

    #[test]
    fn body_bytes_never_read_as_head() {
        // The body contains text that looks like a bad head; it is body.
        let body = b"X\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let head = format!("POST / HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len());
        let mut stream = head.into_bytes();
        stream.extend_from_slice(body);
        let mut guard = guard();
        assert_eq!(feed(&mut guard, &stream, 4), stream.len());
        assert!(matches!(&guard.state, State::Head(head) if head.is_empty()));
    }

    #[test]
    fn http2_preface_passed_through() {
        let mut guard = guard();
        let stream = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nanything";
        assert_eq!(feed(&mut guard, stream, 3), stream.len());
        assert!(matches!(guard.state, State::Passthrough));
    }
}
