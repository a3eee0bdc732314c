//! HTTP/2 limits, with a raw HTTP/2 client that misbehaves on purpose (prior knowledge on the
//! plain listener): the advertised concurrent streams, a header list over 16 KiB refused, and
//! a burst of streams reset as soon as they are opened (rapid reset) ending the connection
//! while other clients are served.

use crate::support::*;

async fn connect(cd: &Cratedock) -> h2::client::SendRequest<bytes::Bytes> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", cd.port))
        .await
        .unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client.ready().await.unwrap()
}

fn get(cd: &Cratedock, path: &str) -> http::Request<()> {
    http::Request::get(cd.url(path)).body(()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_limits_hold_and_a_rapid_reset_flood_ends_only_its_own_connection() {
    let up = FakeUpstream::start().await;
    up.publish(build(CrateSpec::new("serde", "1.0.0")));
    let cd = Cratedock::start(&config_with(&up.index_url(), "", "")).await;
    let path = "/crates-io/index/se/rd/serde";

    let mut client = connect(&cd).await;
    let (resp, _) = client.send_request(get(&cd, path), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(client.current_max_send_streams(), 256, "concurrent streams");

    // 20 KiB of headers: refused (431 or a reset stream), never served.
    let mut big = get(&cd, path);
    for i in 0..20 {
        big.headers_mut().insert(
            format!("x-pad-{i}").parse::<http::HeaderName>().unwrap(),
            "a".repeat(1024).parse().unwrap(),
        );
    }
    let mut client = client.ready().await.unwrap();
    match client.send_request(big, true) {
        Ok((resp, _)) => match resp.await {
            Ok(r) => assert_eq!(r.status(), 431),
            Err(e) => assert!(e.is_reset() || e.is_go_away(), "{e}"),
        },
        Err(e) => assert!(e.is_reset() || e.is_go_away(), "{e}"),
    }

    // Rapid reset: streams opened and cancelled at once, a thousand times.
    let flood = connect(&cd).await;
    let mut ended = false;
    for _ in 0..1_000 {
        let mut ready = match flood.clone().ready().await {
            Ok(c) => c,
            Err(_) => {
                ended = true;
                break;
            }
        };
        match ready.send_request(get(&cd, path), true) {
            Ok((resp, _)) => drop(resp),
            Err(_) => {
                ended = true;
                break;
            }
        }
    }
    if !ended {
        // The GOAWAY may arrive just after the last reset.
        wait_until("the flooding connection is ended", || {
            let flood = flood.clone();
            let cd = &cd;
            async move {
                match flood.ready().await {
                    Ok(mut c) => match c.send_request(get(cd, path), true) {
                        Ok((resp, _)) => resp.await.is_err(),
                        Err(_) => true,
                    },
                    Err(_) => true,
                }
            }
        })
        .await;
    }
    // Everyone else is served.
    let mut other = connect(&cd).await;
    let (resp, _) = other.send_request(get(&cd, path), true).unwrap();
    assert_eq!(resp.await.unwrap().status(), 200);
    assert_eq!(cd.get(path).await.status(), 200);
}
