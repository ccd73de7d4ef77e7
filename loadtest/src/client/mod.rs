//! One simulated participant: a signaling session from the [`Target`], a publisher connection
//! that offers Opus + VP8 and sends them, and a subscriber connection that answers every server
//! offer and measures what arrives. Everything a participant owns lives in one tokio task, so
//! a few runtime threads drive thousands of them with no locks on the packet path.

pub mod light;
pub mod peer;
pub mod receiver;
pub mod sender;
pub mod view;

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid};
use str0m::{Event, IceConnectionState};
use tokio::sync::watch;
use tokio::time::sleep_until;

use crate::measure::histogram::Histogram;
use crate::measure::loss::StreamStats;
use crate::media::opus_source::OpusClip;
use crate::progress::LiveCounters;
use crate::scenario::ParticipantPlan;
use crate::targets::{JoinRequest, Kind, SignalCommand, SignalEvent, Target, TrackOffer};

use peer::{negotiated_pt, Peer, MAX_IDLE};
use receiver::Receiver;
use sender::{AudioSend, SentCounts, VideoSend};
use view::View;

/// From the join request to connected media; slower is a failure (`ice_timeout`).
pub const CONNECT_LIMIT: Duration = Duration::from_secs(20);
const JOIN_LIMIT: Duration = Duration::from_secs(10);
const FLUSH_EVERY: Duration = Duration::from_millis(500);
/// Queued commands go out at most 40 a second: the server closes a socket sending more than
/// 50/s (bursts of 100), and a late joiner in a big class requests its whole page at once.
const COMMAND_SPACING: Duration = Duration::from_millis(25);
/// A video requested this long before the end but still without an m-line counts as missing;
/// one requested later may just not have been renegotiated yet.
const REQUEST_GRACE: Duration = Duration::from_secs(2);

/// What every participant shares.
#[derive(Clone)]
pub struct Env {
    pub target: Arc<dyn Target>,
    pub clip: Arc<OpusClip>,
    pub bind_ip: IpAddr,
    pub live: Arc<LiveCounters>,
    pub stop: watch::Receiver<bool>,
    pub end_at: Instant,
    pub epoch: Instant,
    pub cert: Option<str0m::config::DtlsCert>,
    /// Receive-only participants are light receivers ([`light`]) decrypting one packet in this
    /// many; `None`: everybody does all the work of a real client.
    pub light_sample: Option<u16>,
}

#[derive(Debug, Clone)]
pub struct StreamResult {
    pub from: String,
    /// The publisher's role (`teacher`, `student`, `peer`).
    pub source: &'static str,
    pub kind: Kind,
    /// The subscriber's view asked for it (or it comes unasked: audio, screen shares).
    pub wanted: bool,
    pub received: u64,
    pub expected: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub jitter_ms: f64,
    pub bytes: u64,
    pub keyframes: u64,
    /// Freezes of at least [`crate::measure::loss::STALL`] and their total seconds.
    pub stalls: u64,
    pub stalled_seconds: f64,
}

impl StreamResult {
    /// One received stream's outcome from its loss/jitter statistics.
    pub fn new(
        from: String,
        source: &'static str,
        kind: Kind,
        wanted: bool,
        stats: &StreamStats,
        keyframes: u64,
    ) -> Self {
        StreamResult {
            from,
            source,
            kind,
            wanted,
            received: stats.received,
            expected: stats.expected(),
            lost: stats.lost(),
            duplicates: stats.duplicates,
            jitter_ms: stats.jitter_ms(),
            bytes: stats.bytes,
            keyframes,
            stalls: stats.stalls,
            stalled_seconds: stats.stalled.as_secs_f64(),
        }
    }
}

/// Received bits per second over the span from the first to the last packet of any stream;
/// `None` under half a second, where one keyframe would dominate the rate.
pub fn received_bitrate<'a>(streams: impl Iterator<Item = &'a StreamStats> + Clone) -> Option<f64> {
    let first = streams.clone().map(|s| s.first_at).min()?;
    let last = streams.clone().map(|s| s.last_at).max()?;
    let secs = (last - first).as_secs_f64();
    (secs >= 0.5).then(|| streams.map(|s| s.bytes).sum::<u64>() as f64 * 8.0 / secs)
}

#[derive(Debug)]
pub struct ParticipantResult {
    pub room: String,
    pub identity: String,
    pub role: &'static str,
    pub participant_id: Option<String>,
    pub failure: Option<String>,
    pub join_latency: Option<Duration>,
    /// Kinds this participant actually sent (published and not muted).
    pub sending: Vec<Kind>,
    pub sent: SentCounts,
    pub streams: Vec<StreamResult>,
    pub latency: Histogram,
    /// Latency per publisher role and kind, e.g. (`teacher`, audio).
    pub latency_by_source: Vec<(&'static str, Kind, Histogram)>,
    /// Publishers whose video this participant did not ask for (or asked for too late to
    /// get it before the end): not expected to flow.
    pub unrequested_from: Vec<String>,
    pub unstamped: u64,
    pub audio_with_level: u64,
    pub recv_bitrate_bps: Option<f64>,
    /// Non-fatal `error` messages from the server, by code.
    pub errors: Vec<String>,
}

impl ParticipantResult {
    /// Nothing happened yet.
    pub fn new(plan: &ParticipantPlan) -> Self {
        ParticipantResult {
            room: plan.room.clone(),
            identity: plan.identity.clone(),
            role: plan.role,
            participant_id: None,
            failure: None,
            join_latency: None,
            sending: Vec::new(),
            sent: SentCounts::default(),
            streams: Vec::new(),
            latency: Histogram::default(),
            latency_by_source: Vec::new(),
            unrequested_from: Vec::new(),
            unstamped: 0,
            audio_with_level: 0,
            recv_bitrate_bps: None,
            errors: Vec::new(),
        }
    }
}

struct Flushed {
    sent: u64,
    received: u64,
    expected: u64,
}

async fn recv_opt(peer: Option<&Peer>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match peer {
        Some(p) => p.socket.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

pub async fn run(plan: ParticipantPlan, local_ip: Option<IpAddr>, env: Env) -> ParticipantResult {
    let mut result = ParticipantResult::new(&plan);
    if let Err(reason) = session(&plan, local_ip, &env, &mut result).await {
        result.failure = Some(reason);
    }
    if result.failure.is_some() {
        LiveCounters::add(&env.live.failed, 1);
    }
    LiveCounters::add(&env.live.finished, 1);
    result
}

async fn session(
    plan: &ParticipantPlan,
    local_ip: Option<IpAddr>,
    env: &Env,
    result: &mut ParticipantResult,
) -> Result<(), String> {
    let publishing = plan.audio.is_some() || plan.video.is_some();
    let light = env.light_sample.filter(|_| !publishing);
    let mut view = View::new(plan.view);
    let req = JoinRequest {
        room: plan.room.clone(),
        identity: plan.identity.clone(),
        name: plan.identity.clone(),
        can_publish: publishing,
        local_ip,
        on_demand_video: view.on_demand(),
    };
    let mut sig = env.target.connect(req).await.map_err(|e| {
        tracing::debug!("{}: {e}", plan.identity);
        e.reason
    })?;
    let join_sent = sig.join_sent;

    // Commands waiting for room in the signaling channel (track settings).
    let mut outbox: VecDeque<SignalCommand> = VecDeque::new();
    let joined = tokio::time::timeout(JOIN_LIMIT, async {
        loop {
            match sig.events.recv().await {
                Some(SignalEvent::Joined {
                    participant_id,
                    others,
                }) => {
                    queue_settings(&mut outbox, view.on_joined(&participant_id, &others));
                    return Ok(participant_id);
                }
                Some(SignalEvent::Error { code, .. }) => return Err(format!("join_{code}")),
                Some(SignalEvent::Closed { reason }) => return Err(format!("signaling_{reason}")),
                Some(_) => {}
                None => return Err("signaling_gone".to_string()),
            }
        }
    })
    .await
    .map_err(|_| "join_timeout".to_string())??;
    result.participant_id = Some(joined);

    let mut sub = Peer::new(env.bind_ip, false, light.is_some(), env.cert.as_ref()).await?;
    let mut publ = if publishing {
        Some(Peer::new(env.bind_ip, true, false, env.cert.as_ref()).await?)
    } else {
        None
    };

    // Publisher offer: sendonly Opus and VP8.
    let mut pending: Option<SdpPendingOffer> = None;
    let mut mids: Vec<(Mid, Kind, bool)> = Vec::new();
    if let Some(p) = publ.as_mut() {
        let mut api = p.rtc.sdp_api();
        let stream = format!("s-{}", plan.identity);
        if let Some(a) = &plan.audio {
            let mid = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                Some(stream.clone()),
                Some("mic".into()),
                None,
            );
            mids.push((mid, Kind::Audio, a.muted));
        }
        if plan.video.is_some() {
            let mid = api.add_media(
                MediaKind::Video,
                Direction::SendOnly,
                Some(stream),
                Some("cam".into()),
                None,
            );
            mids.push((mid, Kind::Video, false));
        }
        let (offer, pend) = api.apply().ok_or("publish_offer_empty")?;
        pending = Some(pend);
        let tracks = mids
            .iter()
            .map(|(mid, kind, muted)| TrackOffer {
                mid: mid.to_string(),
                kind: *kind,
                source: if *kind == Kind::Audio {
                    "microphone"
                } else {
                    "camera"
                },
                muted: *muted,
            })
            .collect();
        sig.commands
            .send(SignalCommand::PublishOffer {
                sdp: offer.to_sdp_string(),
                tracks,
            })
            .await
            .map_err(|_| "signaling_gone")?;
        p.drive(|_, _| {}).map_err(|e| format!("rtc: {e}"))?;
    }

    let mut receiver = Receiver::new(env.epoch);
    let mut audio: Option<AudioSend> = None;
    let mut video: Option<VideoSend> = None;
    let mut pub_connected: Option<Instant> = None;
    let mut sub_connected: Option<Instant> = None;
    let mut connected_reported = false;
    let mut stop = env.stop.clone();
    let mut sub_buf = vec![0u8; 2000];
    let mut pub_buf = vec![0u8; if publishing { 2000 } else { 0 }];
    let mut flush_at = Instant::now() + FLUSH_EVERY;
    let mut flushed = Flushed {
        sent: 0,
        received: 0,
        expected: 0,
    };
    let mut failure: Option<String> = None;
    let mut outbox_at = Instant::now();
    // When each video request went out, to tell a missing video from a late request.
    let mut requested_at: HashMap<String, Instant> = HashMap::new();
    let seed: u64 = rand::random();

    loop {
        let now = Instant::now();
        if now >= env.end_at || *stop.borrow() {
            break;
        }
        let ready = if publishing {
            pub_connected
        } else {
            sub_connected
        };
        if ready.is_none() && now >= join_sent + CONNECT_LIMIT {
            failure = Some(if publishing && pending.is_some() {
                "publish_answer_timeout".into()
            } else {
                "ice_timeout".into()
            });
            break;
        }
        if let (Some(at), false) = (ready, connected_reported) {
            connected_reported = true;
            result.join_latency = Some(at.saturating_duration_since(join_sent));
            LiveCounters::add(&env.live.connected, 1);
        }

        let mut next = sub
            .next_timeout
            .min(flush_at)
            .min(env.end_at)
            .min(now + MAX_IDLE);
        if let Some(p) = &publ {
            next = next.min(p.next_timeout);
        }
        if !outbox.is_empty() {
            next = next.min(outbox_at);
        }
        if pub_connected.is_some() {
            if let Some(a) = &audio {
                next = next.min(a.next_at());
            }
            if let Some(v) = &video {
                next = next.min(v.next_at());
            }
        }

        tokio::select! {
            ev = sig.events.recv() => {
                match ev {
                    Some(SignalEvent::PublishAnswer { sdp, tracks: _ }) => {
                        let (Some(p), Some(pend)) = (publ.as_mut(), pending.take()) else { continue };
                        let answer = SdpAnswer::from_sdp_string(&sdp).map_err(|e| format!("bad_answer_sdp: {e}"))?;
                        p.rtc.sdp_api().accept_answer(pend, answer).map_err(|e| format!("answer_rejected: {e}"))?;
                        let start = Instant::now();
                        for (mid, kind, muted) in &mids {
                            match kind {
                                Kind::Audio => {
                                    let pt = negotiated_pt(&p.rtc, *mid, Codec::Opus).ok_or("no_opus_pt")?;
                                    audio = Some(AudioSend::new(*mid, pt, *muted, env.clip.clone(), seed, start));
                                    if !*muted { result.sending.push(Kind::Audio); }
                                }
                                Kind::Video => {
                                    let pt = negotiated_pt(&p.rtc, *mid, Codec::Vp8).ok_or("no_vp8_pt")?;
                                    let cfg = plan.video.as_ref().ok_or("no_video_plan")?;
                                    video = Some(VideoSend::new(*mid, pt, cfg, seed, start));
                                    result.sending.push(Kind::Video);
                                }
                            }
                        }
                    }
                    Some(SignalEvent::SubscriberOffer { sdp, tracks }) => {
                        receiver.on_offer(&tracks, &view);
                        let offer = SdpOffer::from_sdp_string(&sdp).map_err(|e| format!("bad_offer_sdp: {e}"))?;
                        let answer = sub.rtc.sdp_api().accept_offer(offer).map_err(|e| format!("offer_rejected: {e}"))?;
                        let sdp = answer.to_sdp_string();
                        tracing::debug!("{}: subscriber answer {} bytes for {} tracks", plan.identity, sdp.len(), tracks.len());
                        tracing::trace!("subscriber answer: {sdp}");
                        // Queued, not awaited here: waiting for room in the command channel
                        // while the signaling task waits for room in our event channel
                        // deadlocks both. The answer goes ahead of queued requests (they only
                        // lead to another offer), behind any earlier answer.
                        let at = outbox
                            .iter()
                            .take_while(|c| matches!(c, SignalCommand::SubscriberAnswer { .. }))
                            .count();
                        outbox.insert(at, SignalCommand::SubscriberAnswer { sdp });
                    }
                    Some(SignalEvent::ParticipantJoined(p)) => {
                        queue_settings(&mut outbox, view.on_participant_joined(&p));
                    }
                    Some(SignalEvent::TrackPublished { participant_id, track }) => {
                        queue_settings(&mut outbox, view.on_track_published(&participant_id, &track));
                    }
                    Some(SignalEvent::TrackUnpublished { track_id, .. }) => {
                        queue_settings(&mut outbox, view.on_track_unpublished(&track_id));
                    }
                    Some(SignalEvent::ParticipantLeft { participant_id }) => {
                        queue_settings(&mut outbox, view.on_participant_left(&participant_id));
                    }
                    Some(SignalEvent::Error { code, .. }) => result.errors.push(code),
                    Some(SignalEvent::Joined { .. }) => {}
                    Some(SignalEvent::Closed { reason }) => {
                        failure = Some(format!("signaling_{reason}"));
                        break;
                    }
                    None => {
                        failure = Some("signaling_gone".into());
                        break;
                    }
                }
            }
            r = sub.socket.recv_from(&mut sub_buf) => {
                if let Ok(first) = r {
                    let feed = |rx: &mut Receiver, datagram: &[u8], now: Instant| match (light, light::rtp_head(datagram)) {
                        (Some(every), Some(head)) => !rx.on_head(&head, datagram.len(), now) || light::sampled(head.seq, every),
                        _ => true,
                    };
                    sub.handle_datagrams(&mut sub_buf, first, &mut receiver, feed, |rx, rtc, ev| match ev {
                        Event::RtpPacket(pkt) if light.is_some() => rx.on_sampled_rtp(rtc, pkt),
                        Event::RtpPacket(pkt) => rx.on_rtp(rtc, pkt),
                        Event::Connected => sub_connected = Some(Instant::now()),
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            failure.get_or_insert_with(|| "ice_disconnected".into());
                        }
                        _ => {}
                    }).map_err(|e| format!("rtc: {e}"))?;
                }
            }
            r = recv_opt(publ.as_ref(), &mut pub_buf) => {
                if let (Ok(first), Some(p)) = (r, publ.as_mut()) {
                    p.handle_datagrams(&mut pub_buf, first, &mut (), |_, _, _| true, |_, _, ev| match ev {
                        Event::Connected => pub_connected = Some(Instant::now()),
                        Event::KeyframeRequest(_) => {
                            if let Some(v) = video.as_mut() { v.request_keyframe(); }
                        }
                        Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                            failure.get_or_insert_with(|| "ice_disconnected".into());
                        }
                        _ => {}
                    }).map_err(|e| format!("rtc: {e}"))?;
                }
            }
            permit = sig.commands.reserve(), if !outbox.is_empty() && now >= outbox_at => {
                match (permit, outbox.pop_front()) {
                    (Ok(permit), Some(cmd)) => {
                        if let SignalCommand::TrackSettings { track_id, .. } = &cmd {
                            requested_at.entry(track_id.clone()).or_insert_with(Instant::now);
                        }
                        permit.send(cmd);
                        outbox_at = Instant::now() + COMMAND_SPACING;
                    }
                    (Ok(_), None) => {}
                    (Err(_), _) => {
                        failure = Some("signaling_gone".into());
                        break;
                    }
                }
            }
            _ = sleep_until(next.into()) => {}
            _ = stop.changed() => break,
        }
        if failure.is_some() {
            break;
        }

        let now = Instant::now();
        sub.handle_timeout(now).map_err(|e| format!("rtc: {e}"))?;
        sub.drive(|rtc, ev| match ev {
            Event::RtpPacket(pkt) if light.is_some() => receiver.on_sampled_rtp(rtc, pkt),
            Event::RtpPacket(pkt) => receiver.on_rtp(rtc, pkt),
            _ => {}
        })
        .map_err(|e| format!("rtc: {e}"))?;
        if let Some(p) = publ.as_mut() {
            if pub_connected.is_some() {
                if let Some(a) = audio.as_mut() {
                    a.tick(&mut p.rtc, now, &mut result.sent);
                }
                if let Some(v) = video.as_mut() {
                    v.tick(&mut p.rtc, now, &mut result.sent);
                }
            }
            p.handle_timeout(now).map_err(|e| format!("rtc: {e}"))?;
            p.drive(|_, ev| {
                if let Event::KeyframeRequest(_) = ev {
                    if let Some(v) = video.as_mut() {
                        v.request_keyframe();
                    }
                }
            })
            .map_err(|e| format!("rtc: {e}"))?;
        }
        if now >= flush_at {
            flush_at = now + FLUSH_EVERY;
            flush(&env.live, &mut flushed, &result.sent, &receiver);
        }
    }
    flush(&env.live, &mut flushed, &result.sent, &receiver);

    // Leave politely; the signaling task closes the socket when the channel drops.
    let _ = sig.commands.try_send(SignalCommand::Leave);
    sub.rtc.disconnect();
    if let Some(p) = publ.as_mut() {
        p.rtc.disconnect();
    }

    result.streams = receiver
        .streams
        .iter()
        .map(|s| {
            StreamResult::new(
                s.participant.to_string(),
                s.source,
                s.kind,
                view.wants(&s.track_id, s.kind),
                &s.stats,
                s.keyframes,
            )
        })
        .collect();
    result.recv_bitrate_bps = received_bitrate(receiver.streams.iter().map(|s| &s.stats));
    result.unstamped = receiver.unstamped;
    result.audio_with_level = receiver.audio_with_level;
    result.latency = std::mem::take(&mut receiver.latency);
    result.latency_by_source = std::mem::take(&mut receiver.latency_by_source);
    let offered = receiver.offered_tracks();
    let settled_by = env.end_at.checked_sub(REQUEST_GRACE).unwrap_or(env.end_at);
    result.unrequested_from = view.unexpected_publishers(|track_id| {
        offered.contains(track_id)
            || requested_at
                .get(track_id)
                .is_some_and(|at| *at <= settled_by)
    });
    if let Some(f) = failure {
        return Err(f);
    }
    Ok(())
}

/// Video requests go out paced with the other queued commands (see `COMMAND_SPACING`).
fn queue_settings(
    outbox: &mut VecDeque<SignalCommand>,
    settings: impl IntoIterator<Item = view::TrackSetting>,
) {
    outbox.extend(settings.into_iter().map(|t| SignalCommand::TrackSettings {
        track_id: t.track_id,
        width: t.width,
        height: t.height,
        enabled: t.enabled,
    }));
}

fn flush(live: &LiveCounters, flushed: &mut Flushed, sent: &SentCounts, receiver: &Receiver) {
    let (expected, received) = receiver.totals();
    LiveCounters::add(
        &live.packets_sent,
        sent.packets().saturating_sub(flushed.sent),
    );
    LiveCounters::add(
        &live.packets_received,
        received.saturating_sub(flushed.received),
    );
    LiveCounters::add(
        &live.packets_expected,
        expected.saturating_sub(flushed.expected),
    );
    flushed.sent = sent.packets();
    flushed.received = received;
    flushed.expected = expected;
}
