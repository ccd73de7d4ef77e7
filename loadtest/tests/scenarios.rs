//! Runs the load tester against a real server started in this process: small scenarios must
//! join everybody, deliver every publisher's media to every subscriber with low loss and
//! measured latency, and a threshold nobody can meet must make the binary exit non-zero.

use std::sync::Arc;
use std::time::Duration;

use zvon_loadtest::report::{Report, Thresholds};
use zvon_loadtest::runner::{self, RunConfig};
use zvon_loadtest::scenario::{Scenario, VideoProfiles};
use zvon_loadtest::targets::zvon::{TokenSource, ZvonTarget};
use zvon_signaling::ServerConfig;

fn config(addr: std::net::SocketAddr, scenario: Scenario, run_id: &str) -> RunConfig {
    RunConfig {
        targets: vec![Arc::new(ZvonTarget::new(
            addr,
            TokenSource::Mint {
                api_key: ServerConfig::DEV_API_KEY.into(),
                api_secret: ServerConfig::DEV_API_SECRET.into(),
            },
        ))],
        scenario,
        rooms: 1,
        ramp: 15.0,
        duration: Duration::from_secs(3),
        bind_ip: [127, 0, 0, 1].into(),
        source_ips: 0,
        // Two 300 kbit/s cameras per subscriber stay under any subscriber's starting bandwidth
        // estimate, so this checks the tester's plumbing, not how fast the SFU's BWE ramps.
        video: {
            let mut v = VideoProfiles::default();
            v.main.bitrate_bps = 300_000;
            v
        },
        thresholds: Thresholds {
            max_loss_percent: Some(1.0),
            max_p99_latency_ms: Some(200.0),
            max_failures: Some(0),
        },
        quiet: true,
        run_id: run_id.into(),
        light_sample: None,
    }
}

fn assert_healthy(r: &Report, participants: usize, streams: usize) {
    let ctx = format!("{r:#?}");
    assert_eq!(r.participants_planned, participants, "{ctx}");
    assert_eq!(r.participants_connected, participants, "all joined: {ctx}");
    assert_eq!(r.participants_failed, 0, "{ctx}");
    assert_eq!(r.streams.expected, streams, "{ctx}");
    assert_eq!(
        r.streams.received, streams,
        "every subscriber got every publisher's media: {ctx}"
    );
    assert!(r.packets.received_by_subscribers > 0, "{ctx}");
    assert!(r.packets.loss_percent < 1.0, "loss: {ctx}");
    let p99 = r.e2e_latency_ms.p99.expect("latency measured");
    assert!(p99 > 0.0 && p99 < 200.0, "p99 {p99} ms: {ctx}");
    assert_eq!(
        r.packets.unstamped, 0,
        "every packet carried its send stamp: {ctx}"
    );
    assert!(r.passed, "{ctx}");
    let json = serde_json::to_string(r).expect("serialize");
    let back: Report = serde_json::from_str(&json).expect("the JSON report parses");
    assert_eq!(back.streams.received, streams);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn meeting_and_audio_scenarios_deliver_everything() {
    let server = zvon_signaling::start(ServerConfig::for_tests())
        .await
        .expect("server starts");
    let addr = server.http_addr;

    // 3 members × 2 others × (audio + video).
    let meeting = runner::run(config(addr, Scenario::Meeting { size: 3 }, "t1"))
        .await
        .expect("meeting runs");
    assert_healthy(&meeting, 3, 12);
    assert!(meeting.packets.video_sent > 0 && meeting.packets.audio_sent > 0);
    assert!(
        meeting.keyframes_received >= 6,
        "each subscriber saw keyframes of each video"
    );

    // 3 listeners × 2 speakers + 2 speakers × 1 other, audio only.
    let audio = runner::run(config(
        addr,
        Scenario::Audio {
            speakers: 2,
            listeners: 3,
        },
        "t2",
    ))
    .await
    .expect("audio runs");
    assert_healthy(&audio, 5, 8);
    assert_eq!(audio.packets.video_sent, 0);
    assert_eq!(
        audio.packets.audio_with_level, audio.packets.received_by_subscribers,
        "the audio-level extension reaches subscribers"
    );

    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn impossible_threshold_fails_the_binary() {
    let server = zvon_signaling::start(ServerConfig::for_tests())
        .await
        .expect("server starts");
    let url = format!("http://{}", server.http_addr);
    let dir = std::env::temp_dir().join(format!("zvon-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let report_path = dir.join("report.json");
    let args: Vec<String> = [
        "call",
        "--pairs",
        "1",
        "--url",
        &url,
        "--duration",
        "2s",
        "--dev-token",
        "--quiet",
        "--max-p99-latency",
        "0ms",
        "--report",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([report_path.display().to_string()])
    .collect();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_zvon-loadtest"))
            .args(&args)
            .output()
            .expect("run zvon-loadtest")
    })
    .await
    .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "threshold failure exits 1: {stdout}"
    );
    assert!(stdout.contains("FAIL: p99 latency"), "{stdout}");
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(&report_path).expect("report written"))
            .expect("report parses");
    assert!(!report.passed);
    assert_eq!(
        report.participants_connected, 2,
        "joined with dev tokens: {stdout}"
    );
    assert!(report.e2e_latency_ms.p99.is_some());
    let _ = std::fs::remove_dir_all(&dir);
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classroom_subscribes_only_to_the_videos_on_the_page() {
    let server = zvon_signaling::start(ServerConfig::for_tests())
        .await
        .expect("server starts");
    let r = runner::run(config(
        server.http_addr,
        Scenario::Classroom {
            students: 3,
            unmuted: 1,
            visible: 1,
        },
        "t3",
    ))
    .await
    .expect("classroom runs");
    // Teacher: s0's audio + 1 student video. s0: the teacher's audio + video + 1 student video.
    // s1, s2: the teacher's audio + video, s0's audio, 1 student video. Muted audio and the
    // videos nobody asked for are not expected.
    assert_healthy(&r, 4, 2 + 3 + 4 + 4);
    let ctx = format!("{r:#?}");
    let teacher_audio = &r.by_source["teacher_audio"];
    assert_eq!(
        teacher_audio.streams, 3,
        "every student hears the teacher: {ctx}"
    );
    assert!(teacher_audio.loss_percent < 1.0, "{ctx}");
    assert!(teacher_audio.latency_ms.p99.is_some(), "{ctx}");
    assert_eq!(
        r.by_source["teacher_video"].streams, 3,
        "every student sees the teacher: {ctx}"
    );
    assert_eq!(
        r.by_source["student_video"].streams, 4,
        "one thumbnail each: {ctx}"
    );
    // On demand, the eight student videos off the page are never offered, so not one packet
    // of them arrives (a server offering every video would send them until paused).
    assert_eq!(
        r.packets.unwanted_received, 0,
        "videos nobody asked for were sent: {ctx}"
    );
    server.shutdown().await;
}

/// Light receivers account every packet from its plain header and decrypt only a sample; here
/// they join through the server given twice (the round-robin path of a repeated `--url`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn light_receivers_count_every_packet_and_decrypt_a_sample() {
    let server = zvon_signaling::start(ServerConfig::for_tests())
        .await
        .expect("server starts");
    let mut cfg = config(
        server.http_addr,
        Scenario::Audio {
            speakers: 1,
            listeners: 4,
        },
        "t4",
    );
    cfg.targets.push(cfg.targets[0].clone());
    cfg.light_sample = Some(5);
    // A p99 over ~25 samples per listener is the slowest start-up packet; the median says
    // whether the sampled packets are decrypted as they arrive.
    cfg.thresholds.max_p99_latency_ms = None;
    let r = runner::run(cfg).await.expect("audio runs");
    let ctx = format!("{r:#?}");
    assert_eq!(r.participants_connected, 5, "all joined: {ctx}");
    assert_eq!(r.streams.expected, 4, "{ctx}");
    assert_eq!(
        r.streams.received, 4,
        "every listener hears the speaker: {ctx}"
    );
    let p = &r.packets;
    assert_eq!(p.lost, 0, "{ctx}");
    assert_eq!(
        p.unstamped, 0,
        "every decrypted packet had its stamp: {ctx}"
    );
    let p50 = r
        .e2e_latency_ms
        .p50
        .expect("latency measured on the sample");
    assert!(p50 < 50.0, "p50 {p50} ms: {ctx}");
    // A listener misses what was sent before it connected; it gets most of the 3 s.
    assert!(
        p.received_by_subscribers * 2 > 4 * p.audio_sent,
        "every listener received the speaker's packets: {ctx}"
    );
    // Only decrypted packets show the audio-level extension: about one in five.
    assert!(
        p.audio_with_level > 0 && p.audio_with_level * 3 < p.received_by_subscribers,
        "light receivers decrypt a sample, not every packet: {ctx}"
    );
    server.shutdown().await;
}
