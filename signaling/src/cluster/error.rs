//! Errors of the cluster registry.

/// Why a registry call failed. Callers mostly care about "Redis is unavailable"
/// ([`ClusterError::Timeout`], [`ClusterError::Redis`]) versus "Redis holds something we
/// cannot trust" ([`ClusterError::Garbage`]); the first is worth retrying, the second is not.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The operation (named) did not complete within its bound: Redis is down, hung or
    /// unreachable.
    #[error("redis {0} timed out")]
    Timeout(&'static str),
    /// Redis or the connection to it reported an error.
    #[error("redis: {0}")]
    Redis(String),
    /// Redis answered with something that is not what this module stores: a wrong type at
    /// a key, unparsable JSON, a malformed room owner value.
    #[error("unexpected data in redis: {0}")]
    Garbage(String),
    /// No healthy media node to place a room on.
    #[error("no healthy media node")]
    NoMediaNode,
    /// The Redis URL given to [`super::Registry::connect`] cannot be used.
    #[error("invalid redis url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A node id or room name this module cannot store unambiguously.
    #[error("invalid {what}: {reason}")]
    InvalidName { what: &'static str, reason: String },
    /// A registry may only publish the lease of the node it speaks for.
    #[error("lease for node {lease:?} put through the registry of node {registry:?}")]
    ForeignLease { lease: String, registry: String },
}
