//! Framing: a big-endian `u32` length, then that many bytes of JSON.
//!
//! QUIC streams are byte streams; the length prefix lets the event stream carry many
//! messages and lets a reader refuse an absurd size before allocating for it.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::LinkError;

/// The largest frame either side accepts. A subscriber offer for a big room is tens of KiB;
/// anything near this is a bug or an attack, not a message.
pub const MAX_FRAME: usize = 4 << 20;

/// Writes `value` as one frame. Refuses (without writing anything) a value bigger than
/// [`MAX_FRAME`], since the peer would reject it anyway.
pub async fn write_frame<W, T>(writer: &mut W, value: &T) -> Result<(), LinkError>
where
    W: AsyncWrite + Unpin,
    T: Serialize,
{
    let json = serde_json::to_vec(value).map_err(|e| LinkError::Protocol(e.to_string()))?;
    if json.len() > MAX_FRAME {
        return Err(LinkError::Protocol(format!(
            "frame of {} bytes exceeds {MAX_FRAME}",
            json.len()
        )));
    }
    // One buffer, one write: the length never travels in a packet of its own.
    let mut buf = Vec::with_capacity(4 + json.len());
    buf.extend_from_slice(&(json.len() as u32).to_be_bytes());
    buf.extend_from_slice(&json);
    writer
        .write_all(&buf)
        .await
        .map_err(|e| LinkError::Closed(e.to_string()))
}

/// Reads one frame. `Ok(None)` when the stream ended cleanly before a frame started; a
/// stream ending inside a frame is a protocol error.
pub async fn read_frame<R, T>(reader: &mut R) -> Result<Option<T>, LinkError>
where
    R: AsyncRead + Unpin,
    T: DeserializeOwned,
{
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        let n = reader
            .read(&mut len[got..])
            .await
            .map_err(|e| LinkError::Closed(e.to_string()))?;
        if n == 0 {
            return if got == 0 {
                Ok(None)
            } else {
                Err(LinkError::Protocol(
                    "stream ended inside a frame length".into(),
                ))
            };
        }
        got += n;
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(LinkError::Protocol(format!(
            "frame of {len} bytes exceeds {MAX_FRAME}"
        )));
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            LinkError::Protocol("stream ended inside a frame".into())
        } else {
            LinkError::Closed(e.to_string())
        }
    })?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| LinkError::Protocol(format!("malformed message: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ParticipantId, SfuRequest};

    #[tokio::test]
    async fn round_trip_then_clean_end() {
        let request = SfuRequest::PeerStats {
            participant: ParticipantId::from("p"),
        };
        let mut buf = vec![];
        write_frame(&mut buf, &request).await.unwrap();
        write_frame(&mut buf, &request).await.unwrap();
        let mut reader = &buf[..];
        for _ in 0..2 {
            let got: Option<SfuRequest> = read_frame(&mut reader).await.unwrap();
            assert_eq!(got, Some(request.clone()));
        }
        let end: Option<SfuRequest> = read_frame(&mut reader).await.unwrap();
        assert_eq!(end, None);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocating() {
        let buf = (u32::MAX).to_be_bytes();
        let got: Result<Option<SfuRequest>, _> = read_frame(&mut &buf[..]).await;
        assert!(matches!(got, Err(LinkError::Protocol(_))));
    }

    #[tokio::test]
    async fn truncated_and_malformed_frames_are_protocol_errors() {
        let mut truncated = 10u32.to_be_bytes().to_vec();
        truncated.extend_from_slice(b"{\"ty");
        let got: Result<Option<SfuRequest>, _> = read_frame(&mut &truncated[..]).await;
        assert!(matches!(got, Err(LinkError::Protocol(_))));

        let half_length = [0u8, 0];
        let got: Result<Option<SfuRequest>, _> = read_frame(&mut &half_length[..]).await;
        assert!(matches!(got, Err(LinkError::Protocol(_))));

        let mut garbage = 3u32.to_be_bytes().to_vec();
        garbage.extend_from_slice(b"\xff\x00!");
        let got: Result<Option<SfuRequest>, _> = read_frame(&mut &garbage[..]).await;
        assert!(matches!(got, Err(LinkError::Protocol(_))));
    }
}
