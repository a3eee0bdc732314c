//! Properties of the h2c upgrade parser (proptest, in the normal test run): whatever a client
//! sends, however it is cut into reads, opening the connection never panics and never drops or
//! changes a byte of what it hands over untouched.

use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::h2c::{Opening, open};

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Feeds `input` in pieces of the given sizes, then ends the stream; returns what `open`
/// made of it, and every byte the opened stream yields when it was not upgraded.
async fn opened(input: Vec<u8>, sizes: Vec<usize>) -> Option<(Opening, Vec<u8>)> {
    let (mut client, server) = tokio::io::duplex(1 << 20);
    let writer = tokio::spawn(async move {
        let (mut at, mut i) = (0, 0);
        while at < input.len() {
            let n = sizes[i % sizes.len()].clamp(1, input.len() - at);
            if client.write_all(&input[at..at + n]).await.is_err() {
                return;
            }
            at += n;
            i += 1;
        }
        let _ = client.shutdown().await;
        // Keep the client side open for reads of a 101 answer until the test ends.
        let mut sink = Vec::new();
        let _ = client.read_to_end(&mut sink).await;
    });
    let result = match open(server).await {
        Ok((mut stream, Opening::AsItCame)) => {
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            Some((Opening::AsItCame, rest))
        }
        Ok((_, Opening::Upgraded)) => Some((Opening::Upgraded, Vec::new())),
        Err(_) => None,
    };
    writer.abort();
    result
}

/// Request heads near the shape cargo sends, with arbitrary header names and values.
fn head() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::sample::select(vec!["GET", "POST", "HEAD", "PRI", "get"]),
        "[ -~]{0,40}",
        prop::collection::vec(("[!-9;-~]{1,20}", "[ -~]{0,60}"), 0..12),
        any::<bool>(),
    )
        .prop_map(|(method, path, headers, upgrade)| {
            let mut h = format!("{method} /{path} HTTP/1.1\r\nhost: x\r\n");
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            if upgrade {
                h.push_str("connection: Upgrade, HTTP2-Settings\r\nupgrade: h2c\r\nhttp2-settings: AAMAAABkAAQAAQAAAAIAAAAA\r\n");
            }
            h.push_str("\r\n");
            h.into_bytes()
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn garbage_is_handed_over_untouched(
        input in prop::collection::vec(any::<u8>(), 0..4096),
        sizes in prop::collection::vec(1usize..700, 1..8),
    ) {
        if let Some((Opening::AsItCame, rest)) = block_on(opened(input.clone(), sizes)) {
            prop_assert_eq!(rest, input);
        }
    }

    #[test]
    fn request_heads_are_upgraded_or_handed_over_untouched(
        head in head(),
        tail in prop::collection::vec(any::<u8>(), 0..256),
        sizes in prop::collection::vec(1usize..300, 1..8),
    ) {
        let mut input = head.clone();
        input.extend_from_slice(&tail);
        match block_on(opened(input.clone(), sizes)) {
            Some((Opening::AsItCame, rest)) => prop_assert_eq!(rest, input),
            // Only a request that asked for it is upgraded.
            Some((Opening::Upgraded, _)) => {
                let text = String::from_utf8_lossy(&head).to_ascii_lowercase();
                prop_assert!(text.contains("upgrade: h2c"));
            }
            None => {}
        }
    }
}
