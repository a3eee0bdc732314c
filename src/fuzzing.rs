//! Entry points of the fuzz targets under `fuzz/` (cargo-fuzz, on nightly): each takes
//! arbitrary bytes and checks what must hold for any input. Not part of cratedock's API.

use bytes::Bytes;

use crate::index::{IndexFile, IndexRequest, find_version, validate_body};
use crate::names::{CrateName, Version};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime")
        .block_on(f)
}

/// An index path parses only when it is the path of the name it names.
pub fn index_path(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(IndexRequest::File(name)) = IndexRequest::parse(s) {
        assert_eq!(IndexFile::Crate(name).path(), s);
    }
    let _ = CrateName::new(s).map(|n| n.lower());
    let _ = Version::new(s);
}

/// Index bodies are checked and searched without a panic.
pub fn index_lines(data: &[u8]) {
    let file = IndexFile::Crate(CrateName::new("fuzz").expect("a valid name"));
    let _ = validate_body(&file, data);
    let _ = validate_body(&IndexFile::Config, data);
    let _ = find_version(data, "1.0.0");
}

/// The h2c upgrade hands over what it does not upgrade untouched.
pub fn h2c(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let input = data.to_vec();
    block_on(async move {
        let (mut client, server) = tokio::io::duplex(1 << 20);
        client.write_all(&input).await.expect("the duplex holds it");
        client.shutdown().await.expect("shut down");
        if let Ok((mut stream, crate::net::h2c::Opening::AsItCame)) =
            crate::net::h2c::open(server).await
        {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            assert_eq!(rest, input);
        }
    });
}

/// A configuration file loads or is refused, never panics.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::config::Config::merge(
            "fuzz.toml",
            text,
            &[],
            &crate::config::CliOverrides::default(),
        );
    }
}

/// A publish body is framed and its tarball checked without a panic.
pub fn publish_body(data: &[u8]) {
    let body = Bytes::copy_from_slice(data);
    let stream = futures_util::stream::iter([Ok::<_, String>(body)]);
    if let Ok(upload) = block_on(crate::registry::frame::read(stream, 1 << 20)) {
        let _ = crate::tarball::inspect(&upload.tarball, 4 << 20);
    }
    let _ = crate::tarball::inspect(data, 4 << 20);
}

#[cfg(test)]
mod tests {
    /// The fuzz targets' entry points run on stable too, on a few seeds.
    #[test]
    fn the_entry_points_take_seeds_and_garbage() {
        let seeds: &[&[u8]] = &[
            b"",
            b"se/rd/serde",
            b"3/s/syn",
            b"{\"name\":\"fuzz\",\"vers\":\"1.0.0\",\"cksum\":\"00\"}\n",
            b"GET / HTTP/1.1\r\nhost: x\r\nupgrade: h2c\r\nconnection: upgrade, http2-settings\r\nhttp2-settings: AAMAAABk\r\n\r\n",
            b"[server]\nlisten = \"localhost:1\"\n",
            b"\x05\x00\x00\x00{}\x03\x00\x00\x00abc",
            &[0xff, 0x00, 0x1f, 0x8b, 0x08],
        ];
        for s in seeds {
            super::index_path(s);
            super::index_lines(s);
            super::h2c(s);
            super::config(s);
            super::publish_body(s);
        }
    }
}
