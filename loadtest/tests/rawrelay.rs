//! The raw relay baseline forwards what a publisher sends to every other participant of the
//! room, and its final counters (read by scripts/bench/run.sh) say so.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Relay(Child);

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_udp_port() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.local_addr().expect("addr").port()
}

fn ask(socket: &UdpSocket, relay: &str, msg: &str) {
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        socket.send_to(msg.as_bytes(), relay).expect("send");
        if let Ok((n, _)) = socket.recv_from(&mut buf) {
            assert!(
                buf[..n].starts_with(b"ok "),
                "relay answered {:?}",
                &buf[..n]
            );
            return;
        }
    }
    panic!("relay never acknowledged {msg:?}");
}

#[test]
fn fans_out_to_other_participants_and_reports_counts() {
    let port = free_udp_port();
    let relay_addr = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_zvon-rawrelay"))
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--stats-every",
            "0",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .expect("start relay");
    let mut relay = Relay(child);
    let mut stdout = BufReader::new(relay.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    stdout.read_line(&mut line).expect("listening line");
    assert!(line.contains("listening"), "{line}");

    let sockets: Vec<UdpSocket> = (0..3)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("timeout");
            s
        })
        .collect();
    let (publisher, own_sub, other_sub) = (&sockets[0], &sockets[1], &sockets[2]);
    ask(publisher, &relay_addr, "publish room-a 1");
    ask(own_sub, &relay_addr, "subscribe room-a 1");
    ask(other_sub, &relay_addr, "subscribe room-a 2");

    for i in 0..100u8 {
        publisher
            .send_to(&[0x80, i, 1, 2, 3], &relay_addr)
            .expect("send");
    }
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let deadline = Instant::now() + Duration::from_secs(5);
    while got.len() < 100 && Instant::now() < deadline {
        if let Ok((n, _)) = other_sub.recv_from(&mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    assert_eq!(
        got.len(),
        100,
        "the other participant receives every packet"
    );
    assert_eq!(got[42], vec![0x80, 42, 1, 2, 3], "payload untouched");
    assert!(
        own_sub.recv_from(&mut buf).is_err(),
        "nobody receives their own media"
    );

    // SAFETY: signalling our own child by its PID.
    unsafe { libc::kill(relay.0.id() as libc::pid_t, libc::SIGTERM) };
    let mut last = String::new();
    for l in stdout.lines() {
        last = l.expect("line");
    }
    assert!(last.contains("\"final\":true"), "{last}");
    assert!(last.contains("\"forwarded\":100,"), "{last}");
    assert!(last.contains("\"received\":103,"), "{last}");
}
