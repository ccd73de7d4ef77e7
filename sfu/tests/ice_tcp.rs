//! ICE-TCP streams from hostile clients, against a real media node on loopback: whatever is
//! not a binding request for one of our connections, and frames over the limit, close the
//! stream and are counted; the node without `ice_tcp` does not listen at all. (A real
//! client connecting over ICE-TCP: tests/browser/turn.mjs, scenario ice-tcp.)

use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;
use zvon_sfu::{SfuConfig, SfuNode};

const LOOPBACK: [u8; 4] = [127, 0, 0, 1];

fn node(ice_tcp: bool) -> SfuNode {
    SfuNode::start(&SfuConfig {
        bind_ip: LOOPBACK.into(),
        advertised_ip: LOOPBACK.into(),
        port_base: 0,
        workers: 1,
        ice_tcp,
        ..Default::default()
    })
    .expect("media node")
}

/// Sends `bytes` on a new stream and returns once the server closed it.
async fn closed_after(node: &SfuNode, bytes: &[u8]) {
    let mut s = TcpStream::connect(node.media_addrs()[0])
        .await
        .expect("the worker listens on TCP on its media port");
    s.write_all(bytes).await.expect("write");
    let mut buf = [0u8; 64];
    let read = timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("the server closes the stream");
    // A reset is as closed as an orderly end.
    assert!(matches!(read, Ok(0) | Err(_)), "the server sent {read:?}");
}

fn framed(packet: &[u8]) -> Vec<u8> {
    let mut out = (packet.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(packet);
    out
}

async fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..100 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{what}");
}

#[tokio::test]
async fn streams_that_are_not_ice_for_us_are_closed_and_counted() {
    let node = node(true);
    let stats = node.stats();
    let tcp = &stats.ice_tcp;

    // RTP before any binding request.
    let mut rtp = vec![0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 7];
    rtp.extend_from_slice(&[0; 100]);
    closed_after(&node, &framed(&rtp)).await;
    // Something that starts like STUN but names no ufrag of ours (a binding request header
    // with the magic cookie and no attributes).
    let mut stun = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42];
    stun.extend_from_slice(&[9; 12]);
    closed_after(&node, &framed(&stun)).await;
    wait_until("both rejected", || {
        tcp.closed_rejected.load(Ordering::Relaxed) == 2
    })
    .await;

    // An HTTP request reads as a frame length far over the limit.
    closed_after(&node, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    wait_until("oversize counted", || {
        tcp.closed_oversize.load(Ordering::Relaxed) == 1
    })
    .await;
    wait_until("no stream left open", || {
        tcp.connections.load(Ordering::Relaxed) == 0
    })
    .await;
    // Nothing of it reached the UDP counters' send side.
    assert_eq!(stats.snapshot().datagrams_sent, 0);
}

#[tokio::test]
async fn without_the_setting_the_media_port_takes_no_tcp() {
    let node = node(false);
    let refused = TcpStream::connect(node.media_addrs()[0]).await;
    assert!(refused.is_err(), "something accepted TCP on the media port");
}
