//! HTTP/2 on the plain listener by the HTTP/1.1 `Upgrade: h2c` handshake (RFC 7540 §3.2).
//!
//! cargo's curl, with multiplexing on (its default), sends `Upgrade: h2c` on every request to
//! an `http://` registry and, until the server answers, parks its other transfers waiting to
//! learn whether the connection will multiplex. A server that declines leaves cargo running
//! its transfers nearly one at a time; a server that upgrades gets them all multiplexed on
//! one connection, as over HTTPS.
//!
//! hyper has no server side of this handshake, so it is done here, before hyper sees the
//! connection: the first request head is read and parsed; when it asks for `h2c` (and has no
//! body), cratedock answers `101 Switching Protocols`, reads the client's connection preface,
//! and hands hyper's HTTP/2 server a byte stream in which the upgraded request follows the
//! preface as an ordinary HEADERS frame on stream 1, which is where the RFC puts its response.
//! Anything else (a plain HTTP/1.1 request, HTTP/2 with prior knowledge, garbage) is handed
//! over untouched, with the bytes already read put back in front.
//!
//! The rule this module keeps: it never answers a request itself and never drops a byte; it
//! either upgrades a request exactly as the RFC describes or leaves the connection as it was.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};

/// The client connection preface of HTTP/2.
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Request heads larger than this are not upgraded (the HEADERS frame must fit the default
/// maximum frame size of 16 KiB).
const MAX_HEAD: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const FRAME_SETTINGS: u8 = 0x4;
const FRAME_HEADERS: u8 = 0x1;
const FLAG_END_STREAM: u8 = 0x1;
const FLAG_END_HEADERS: u8 = 0x4;

/// Headers that belong to the HTTP/1.1 hop and have no place in HTTP/2 (RFC 9113 §8.2.2).
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "upgrade",
    "http2-settings",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "host",
];

/// How a plain connection opened.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// The first request asked for `h2c` and was upgraded: the connection now speaks HTTP/2.
    Upgraded,
    /// Anything else: serve it as it came.
    AsItCame,
}

/// Reads the start of a plain connection and upgrades it to HTTP/2 when its first request
/// asks for it. Returns the stream to serve (with every byte read so far put back in front)
/// and how it opened. Errors are I/O errors or a client that broke the handshake midway.
pub(crate) async fn open<IO>(mut io: IO) -> io::Result<(Rewind<IO>, Opening)>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(4096);
    let head = loop {
        if io.read_buf(&mut buf).await? == 0 {
            // Closed before a whole head: let hyper see the same end.
            return Ok((Rewind::new(io, buf.freeze()), Opening::AsItCame));
        }
        match upgrade_request(&buf) {
            Scan::NeedMore if buf.len() < MAX_HEAD => continue,
            Scan::Upgrade(head) => break head,
            Scan::NeedMore | Scan::No => {
                return Ok((Rewind::new(io, buf.freeze()), Opening::AsItCame));
            }
        }
    };
    if head.consumed != buf.len() {
        // Bytes after the head (a pipelined request): not a clean upgrade, leave it as it is.
        return Ok((Rewind::new(io, buf.freeze()), Opening::AsItCame));
    }

    io.write_all(
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
    )
    .await?;
    io.flush().await?;

    // The client now sends its preface: the magic, then a SETTINGS frame.
    let mut prefix = BytesMut::with_capacity(256);
    read_at_least(&mut io, &mut prefix, PREFACE.len() + 9).await?;
    if &prefix[..PREFACE.len()] != PREFACE {
        return Err(broken(
            "the client did not send the HTTP/2 preface after 101",
        ));
    }
    let frame = &prefix[PREFACE.len()..PREFACE.len() + 9];
    if frame[3] != FRAME_SETTINGS {
        return Err(broken("the client's preface has no SETTINGS frame"));
    }
    let settings_len =
        usize::from(frame[0]) << 16 | usize::from(frame[1]) << 8 | usize::from(frame[2]);
    // Read before hyper sees the connection, so hyper's limits do not apply yet: a SETTINGS
    // frame is 6 bytes per setting, and HTTP/2's default maximum frame size is 16 KiB.
    if settings_len > MAX_HEAD {
        return Err(broken("the client's SETTINGS frame is larger than 16 KiB"));
    }
    let settings_end = PREFACE.len() + 9 + settings_len;
    read_at_least(&mut io, &mut prefix, settings_end).await?;
    let after = prefix.split_off(settings_end);
    prefix.extend_from_slice(&head.frame);
    prefix.extend_from_slice(&after);
    Ok((Rewind::new(io, prefix.freeze()), Opening::Upgraded))
}

async fn read_at_least<IO: AsyncRead + Unpin>(
    io: &mut IO,
    buf: &mut BytesMut,
    n: usize,
) -> io::Result<()> {
    while buf.len() < n {
        if io.read_buf(buf).await? == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(())
}

fn broken(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// An upgradable first request: how many bytes its head took, and its HTTP/2 HEADERS frame.
struct UpgradeHead {
    consumed: usize,
    frame: Bytes,
}

enum Scan {
    NeedMore,
    No,
    Upgrade(UpgradeHead),
}

/// Whether `buf` starts with a complete request head that asks for `h2c` and can be upgraded.
fn upgrade_request(buf: &[u8]) -> Scan {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let consumed = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Scan::NeedMore,
        Err(_) => return Scan::No,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else {
        return Scan::No;
    };
    // Only origin-form targets map to an HTTP/2 `:path` (not a proxy's absolute form).
    if !path.starts_with('/') {
        return Scan::No;
    }
    let values = |name: &'static str| {
        req.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .map(|h| h.value)
    };
    let has_token = |name: &'static str, token: &str| {
        values(name).any(|v| {
            std::str::from_utf8(v)
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
        })
    };
    let no_body =
        values("content-length").all(|v| v == b"0") && values("transfer-encoding").next().is_none();
    let asks = has_token("upgrade", "h2c")
        && has_token("connection", "upgrade")
        && has_token("connection", "http2-settings")
        && values("http2-settings").count() == 1;
    // Only requests without a body: the body of an upgraded request would have to be read
    // as HTTP/1.1 before the switch.
    if !asks || !no_body || !matches!(method, "GET" | "HEAD") {
        return Scan::No;
    }
    let mut hosts = values("host");
    let (Some(authority), None) = (hosts.next(), hosts.next()) else {
        return Scan::No;
    };

    let mut block = BytesMut::with_capacity(consumed);
    literal(&mut block, b":method", method.as_bytes());
    literal(&mut block, b":scheme", b"http");
    literal(&mut block, b":authority", authority);
    literal(&mut block, b":path", path.as_bytes());
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) || (name == "te" && h.value != b"trailers") {
            continue;
        }
        literal(&mut block, name.as_bytes(), h.value);
    }
    if block.len() > MAX_HEAD {
        return Scan::No;
    }
    let mut frame = BytesMut::with_capacity(9 + block.len());
    let len = block.len() as u32;
    frame.put_slice(&len.to_be_bytes()[1..]);
    frame.put_u8(FRAME_HEADERS);
    frame.put_u8(FLAG_END_STREAM | FLAG_END_HEADERS);
    frame.put_u32(1); // stream 1: where RFC 7540 §3.2 puts the upgraded request
    frame.put_slice(&block);
    Scan::Upgrade(UpgradeHead {
        consumed,
        frame: frame.freeze(),
    })
}

/// HPACK "literal header field without indexing, new name" (RFC 7541 §6.2.2), no Huffman.
fn literal(out: &mut BytesMut, name: &[u8], value: &[u8]) {
    out.put_u8(0);
    string(out, name);
    string(out, value);
}

fn string(out: &mut BytesMut, s: &[u8]) {
    integer(out, s.len(), 7, 0);
    out.put_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut BytesMut, mut v: usize, n: u32, flags: u8) {
    let max = (1usize << n) - 1;
    if v < max {
        out.put_u8(flags | v as u8);
        return;
    }
    out.put_u8(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.put_u8((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.put_u8(v as u8);
}

/// A stream with bytes put back in front of it.
#[derive(Debug)]
pub(crate) struct Rewind<IO> {
    prefix: Bytes,
    io: IO,
}

impl<IO> Rewind<IO> {
    fn new(io: IO, prefix: Bytes) -> Self {
        Self { prefix, io }
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for Rewind<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Rewind<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARGO_REQUEST: &[u8] = b"GET /crates-io/index/se/rd/serde HTTP/1.1\r\n\
        Host: localhost:8080\r\n\
        User-Agent: cargo/1.95.0\r\n\
        Accept-Encoding: deflate, gzip\r\n\
        Connection: Upgrade, HTTP2-Settings\r\n\
        Upgrade: h2c\r\n\
        HTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n\
        cargo-protocol: version=1\r\n\
        accept: text/plain\r\n\r\n";

    /// Decodes the literal-without-indexing fields this module writes.
    fn decode(mut block: &[u8]) -> Vec<(String, String)> {
        fn int(b: &mut &[u8]) -> usize {
            let mut v = usize::from(b[0] & 0x7f);
            *b = &b[1..];
            if v == 0x7f {
                let mut shift = 0;
                loop {
                    let byte = b[0];
                    *b = &b[1..];
                    v += usize::from(byte & 0x7f) << shift;
                    shift += 7;
                    if byte & 0x80 == 0 {
                        break;
                    }
                }
            }
            v
        }
        let mut out = Vec::new();
        while !block.is_empty() {
            assert_eq!(block[0], 0);
            block = &block[1..];
            let mut field = || {
                let n = int(&mut block);
                let s = String::from_utf8(block[..n].to_vec()).unwrap();
                block = &block[n..];
                s
            };
            let name = field();
            let value = field();
            out.push((name, value));
        }
        out
    }

    #[test]
    fn cargos_upgrade_request_becomes_a_headers_frame_on_stream_1() {
        let Scan::Upgrade(head) = upgrade_request(CARGO_REQUEST) else {
            panic!("cargo's request is upgradable");
        };
        assert_eq!(head.consumed, CARGO_REQUEST.len());
        let f = &head.frame;
        let len = usize::from(f[0]) << 16 | usize::from(f[1]) << 8 | usize::from(f[2]);
        assert_eq!(len, f.len() - 9);
        assert_eq!(f[3], FRAME_HEADERS);
        assert_eq!(f[4], FLAG_END_STREAM | FLAG_END_HEADERS);
        assert_eq!(&f[5..9], &[0, 0, 0, 1]);
        let fields = decode(&f[9..]);
        let get = |n: &str| fields.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
        assert_eq!(get(":method"), Some("GET"));
        assert_eq!(get(":scheme"), Some("http"));
        assert_eq!(get(":authority"), Some("localhost:8080"));
        assert_eq!(get(":path"), Some("/crates-io/index/se/rd/serde"));
        assert_eq!(get("cargo-protocol"), Some("version=1"));
        assert_eq!(get("user-agent"), Some("cargo/1.95.0"));
        for gone in ["connection", "upgrade", "http2-settings", "host"] {
            assert_eq!(get(gone), None, "{gone} is HTTP/1.1-only");
        }
    }

    #[test]
    fn only_clean_upgrade_requests_are_upgraded() {
        let text = std::str::from_utf8(CARGO_REQUEST).unwrap();
        let no = |req: String| matches!(upgrade_request(req.as_bytes()), Scan::No);
        assert!(matches!(
            upgrade_request(&CARGO_REQUEST[..40]),
            Scan::NeedMore
        ));
        assert!(no(text.replace("Upgrade: h2c", "Upgrade: websocket")));
        assert!(no(text.replace(
            "Connection: Upgrade, HTTP2-Settings",
            "Connection: Upgrade"
        )));
        assert!(no(
            text.replace("HTTP2-Settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n", "")
        ));
        assert!(no(text.replace("GET", "PUT")));
        assert!(no(text.replace(
            "GET /crates-io",
            "GET http://localhost:8080/crates-io"
        )));
        assert!(no(text.replace("accept: text/plain", "content-length: 5")));
        assert!(no(text.replace("Host: localhost:8080\r\n", "")));
        assert!(no(String::from_utf8(PREFACE.to_vec()).unwrap()));
        assert!(no(format!(
            "GET / HTTP/1.0\r\n{}",
            &text[text.find('\n').unwrap() + 1..]
        )));
    }

    #[test]
    fn long_integers_use_continuation_bytes() {
        let mut out = BytesMut::new();
        integer(&mut out, 1337, 5, 0);
        assert_eq!(&out[..], &[31, 154, 10]); // RFC 7541 C.1.2
        let mut out = BytesMut::new();
        string(&mut out, &[b'x'; 200]);
        assert_eq!(&out[..3], &[127, 73, b'x']);
    }

    /// cargo's side of an upgrade on `client`: its request sent, the `101` read.
    async fn upgraded_client(mut client: tokio::io::DuplexStream) -> tokio::io::DuplexStream {
        client.write_all(CARGO_REQUEST).await.unwrap();
        let mut answer = vec![0u8; 71];
        client.read_exact(&mut answer).await.unwrap();
        assert!(answer.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
        client
    }

    #[tokio::test]
    async fn the_preface_is_followed_by_the_upgraded_request() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let client = tokio::spawn(async move {
            let mut c_write = upgraded_client(client).await;
            // The preface with an empty SETTINGS frame, then a frame for stream 3.
            c_write.write_all(PREFACE).await.unwrap();
            c_write
                .write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            c_write.write_all(b"next").await.unwrap();
        });
        let (mut io, opening) = open(server).await.unwrap();
        assert_eq!(opening, Opening::Upgraded);
        client.await.unwrap();
        let mut seen = vec![0u8; PREFACE.len() + 9];
        io.read_exact(&mut seen).await.unwrap();
        assert!(seen.starts_with(PREFACE));
        let mut header = [0u8; 9];
        io.read_exact(&mut header).await.unwrap();
        assert_eq!((header[3], header[8]), (FRAME_HEADERS, 1));
        let len = usize::from(header[1]) << 8 | usize::from(header[2]);
        let mut block = vec![0u8; len];
        io.read_exact(&mut block).await.unwrap();
        let mut rest = [0u8; 4];
        io.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b"next");
    }

    #[tokio::test]
    async fn a_settings_frame_over_16_kib_is_refused_before_it_is_read() {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let client = tokio::spawn(async move {
            let mut c_write = upgraded_client(client).await;
            c_write.write_all(PREFACE).await.unwrap();
            // Announces 16 MiB of settings, sends none, and keeps the connection open.
            c_write
                .write_all(&[0xff, 0xff, 0xff, 4, 0, 0, 0, 0, 0])
                .await
                .unwrap();
            c_write
        });
        let opened = tokio::time::timeout(std::time::Duration::from_secs(10), open(server))
            .await
            .expect("refused without waiting for the announced bytes");
        let Err(e) = opened else {
            panic!("a 16 MiB SETTINGS frame was accepted")
        };
        assert!(e.to_string().contains("larger than 16 KiB"), "{e}");
        drop(client.await.unwrap());
    }

    #[tokio::test]
    async fn other_openings_are_handed_over_byte_for_byte() {
        for first in [
            &b"GET /health/live HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            PREFACE,
            b"\x16\x03\x01 not http",
        ] {
            let (mut client, server) = tokio::io::duplex(1024);
            client.write_all(first).await.unwrap();
            drop(client);
            let (mut io, opening) = open(server).await.unwrap();
            assert_eq!(opening, Opening::AsItCame);
            let mut seen = Vec::new();
            io.read_to_end(&mut seen).await.unwrap();
            assert_eq!(seen, first);
        }
    }
}
