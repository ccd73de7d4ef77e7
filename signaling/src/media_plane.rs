//! How the hub reaches media: the node embedded in this process, or the fleet's media nodes
//! over QUIC. Both speak the same `SfuRequest`/`SfuEvent` API, so the hub does not care which.

use std::sync::Arc;

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
}
