//! What a participant received of another's stream, as the media-path tests ask it: how many
//! packets, whether a stream stopped (nothing new over a quiet window), whether it is complete.

use std::time::Duration;

use anyhow::{ensure, Context, Result};

use crate::media::SeqReport;
use crate::TestParticipant;

/// Packets that may still arrive after the server acted: already in flight or queued.
pub const IN_FLIGHT: Duration = Duration::from_millis(300);
/// How long a stopped stream is watched for stray packets.
pub const QUIET: Duration = Duration::from_millis(1500);

/// Packets of `kind` from participant `from` that `p` has received so far.
pub fn count(p: &TestParticipant, from: &str, kind: &str) -> usize {
    p.received_from(from, kind)
        .map(|t| t.packets.len())
        .unwrap_or(0)
}

/// Packets of `kind` from `from` that `p` receives during [`QUIET`], after in-flight ones land.
pub async fn received_during_quiet(p: &TestParticipant, from: &str, kind: &str) -> usize {
    tokio::time::sleep(IN_FLIGHT).await;
    let before = count(p, from, kind);
    tokio::time::sleep(QUIET).await;
    count(p, from, kind) - before
}

/// The received stream of `kind` from `from` has no hole and no duplicate.
pub fn complete(p: &TestParticipant, from: &str, kind: &str) -> Result<SeqReport> {
    let t = p.received_from(from, kind).context("nothing received")?;
    let r = SeqReport::of(&t.packets);
    ensure!(
        r.missing == 0 && r.duplicates == 0,
        "{kind} from {from}: {r:?}"
    );
    Ok(r)
}
