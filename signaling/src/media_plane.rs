//! How the hub reaches media: the node embedded in this process, or the fleet's media nodes
//! over QUIC. Both speak the same `SfuRequest`/`SfuEvent` API, so the hub does not care which.

use std::sync::Arc;

use zvon_sfu::api::ParticipantId;
use zvon_sfu::{SfuError, SfuNode, SfuRequest, SfuResponse};

use crate::fleet::MediaFleet;

#[derive(Clone)]
pub enum MediaPlane {
    /// The all-in-one mode: one media node in this process, reached by in-process channels.
    Embedded(Arc<SfuNode>),
    /// Cluster mode: each room placed on one of the fleet's media nodes.
    Fleet(Arc<MediaFleet>),
}

impl MediaPlane {
    pub async fn request(&self, request: SfuRequest) -> Result<SfuResponse, SfuError> {
        match self {
            MediaPlane::Embedded(node) => node.request(request).await,
            MediaPlane::Fleet(fleet) => fleet.request(request).await,
        }
    }

    /// Whether `participant`'s media node is gone (cluster mode: its link closed, or the
    /// participant is between nodes). A request for it that failed is then the failover's
    /// business, which moves it (`media_reset`) or removes it.
    pub fn media_lost(&self, participant: &ParticipantId) -> bool {
        match self {
            MediaPlane::Embedded(_) => false,
            MediaPlane::Fleet(fleet) => fleet.media_lost(participant),
        }
    }
}
