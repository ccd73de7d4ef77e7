//! A WebM writer for one track, made for files that must survive the process being killed:
//! the Segment has an unknown size while it is written, and frames go out in Clusters of at
//! most a second (or from one video keyframe to the next), each written whole with one
//! `write` once complete. A killed recording loses the open cluster at most; every cluster
//! before it plays. A clean finish patches the Segment size and the Duration in place. No
//! Cues: players seek by scanning clusters, which is cheap for files of this size.
//!
//! Muxing crates considered: `webm` (libwebm through C++ bindings: a C++ build in every CI
//! run, and its live mode still holds clusters until the next one), `ebml-webm` ("early
//! development, not for production"), `matroska` and `mkv` (readers only), `webm-iterable`
//! (a generic EBML tag writer: each element still built by hand, one allocation per tag).
//! What a recording needs of Matroska is a dozen element ids, written here.

use std::io::{self, Seek, SeekFrom, Write};

const EBML: u32 = 0x1A45_DFA3;
const SEGMENT: u32 = 0x1853_8067;
const INFO: u32 = 0x1549_A966;
const TIMECODE_SCALE: u32 = 0x2A_D7B1;
const MUXING_APP: u32 = 0x4D80;
const WRITING_APP: u32 = 0x5741;
const DURATION: u32 = 0x4489;
const VOID: u32 = 0xEC;
const DATE_UTC: u32 = 0x4461;
const TRACKS: u32 = 0x1654_AE6B;
const TRACK_ENTRY: u32 = 0xAE;
const TRACK_NUMBER: u32 = 0xD7;
const TRACK_UID: u32 = 0x73C5;
const TRACK_TYPE: u32 = 0x83;
const FLAG_LACING: u32 = 0x9C;
const CODEC_ID: u32 = 0x86;
const CODEC_PRIVATE: u32 = 0x63A2;
const CODEC_DELAY: u32 = 0x56AA;
const SEEK_PRE_ROLL: u32 = 0x56BB;
const VIDEO: u32 = 0xE0;
const PIXEL_WIDTH: u32 = 0xB0;
const PIXEL_HEIGHT: u32 = 0xBA;
const AUDIO: u32 = 0xE1;
const SAMPLING_FREQUENCY: u32 = 0xB5;
const CHANNELS: u32 = 0x9F;
const CLUSTER: u32 = 0x1F43_B675;
const CLUSTER_TIMECODE: u32 = 0xE7;
const SIMPLE_BLOCK: u32 = 0xA3;

/// An 8-byte size field saying "unknown" (all value bits set).
const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];
/// Longest a cluster runs, in milliseconds: what a killed recording may lose.
pub const CLUSTER_MS: u64 = 1000;
/// Unix milliseconds of 2001-01-01, Matroska's epoch for DateUTC.
const MATROSKA_EPOCH_UNIX_MS: i64 = 978_307_200_000;

/// What the track carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    Vp8 { width: u16, height: u16 },
    Opus,
}

fn put_id(buf: &mut Vec<u8>, id: u32) {
    let bytes = id.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count();
    buf.extend_from_slice(&bytes[skip..]);
}

/// A size as the shortest EBML variable-length integer.
fn put_size(buf: &mut Vec<u8>, size: u64) {
    let mut len = 1;
    // A length-n vint holds 7n bits; all ones is reserved for "unknown".
    while len < 8 && size >= (1u64 << (7 * len)) - 1 {
        len += 1;
    }
    let marked = size | (1u64 << (7 * len));
    buf.extend_from_slice(&marked.to_be_bytes()[8 - len..]);
}

fn put_size8(buf: &mut Vec<u8>, size: u64) {
    buf.push(0x01);
    buf.extend_from_slice(&size.to_be_bytes()[1..]);
}

fn element(buf: &mut Vec<u8>, id: u32, body: &[u8]) {
    put_id(buf, id);
    put_size(buf, body.len() as u64);
    buf.extend_from_slice(body);
}

fn uint(buf: &mut Vec<u8>, id: u32, v: u64) {
    let bytes = v.to_be_bytes();
    let skip = bytes.iter().take_while(|b| **b == 0).count().min(7);
    element(buf, id, &bytes[skip..]);
}

fn float(buf: &mut Vec<u8>, id: u32, v: f64) {
    element(buf, id, &v.to_be_bytes());
}

fn master(buf: &mut Vec<u8>, id: u32, fill: impl FnOnce(&mut Vec<u8>)) {
    let mut body = Vec::new();
    fill(&mut body);
    element(buf, id, &body);
}

/// The OpusHead identification header (RFC 7845) Matroska carries as CodecPrivate: 2
/// channels (WebRTC's opus/48000/2; mono packets decode to both), no pre-skip known.
fn opus_head() -> [u8; 19] {
    let mut h = [0u8; 19];
    h[..8].copy_from_slice(b"OpusHead");
    h[8] = 1;
    h[9] = 2;
    h[12..16].copy_from_slice(&48_000u32.to_le_bytes());
    h
}

/// One track's WebM file being written.
pub struct WebmWriter<W: Write + Seek> {
    out: W,
    /// SimpleBlocks of the open cluster.
    blocks: Vec<u8>,
    cluster_tc: Option<u64>,
    last_tc: u64,
    video: bool,
    /// Where the Segment's size and the Info's Duration value sit, patched by `finish`.
    segment_size_at: u64,
    segment_start: u64,
    duration_at: u64,
    /// Bytes written so far.
    written: u64,
}

impl<W: Write + Seek> WebmWriter<W> {
    /// Writes the EBML header, an open Segment, Info (dated `start_unix_ms`) and the track.
    pub fn new(mut out: W, codec: Codec, start_unix_ms: u64) -> io::Result<Self> {
        let mut head = Vec::with_capacity(256);
        master(&mut head, EBML, |b| {
            uint(b, 0x4286, 1); // EBMLVersion
            uint(b, 0x42F7, 1); // EBMLReadVersion
            uint(b, 0x42F2, 4); // EBMLMaxIDLength
            uint(b, 0x42F3, 8); // EBMLMaxSizeLength
            element(b, 0x4282, b"webm"); // DocType
            uint(b, 0x4287, 4); // DocTypeVersion
            uint(b, 0x4285, 2); // DocTypeReadVersion
        });
        put_id(&mut head, SEGMENT);
        let segment_size_at = head.len() as u64;
        head.extend_from_slice(&UNKNOWN_SIZE);
        let segment_start = head.len() as u64;
        let mut info = Vec::new();
        uint(&mut info, TIMECODE_SCALE, 1_000_000);
        element(&mut info, MUXING_APP, b"zvon");
        element(&mut info, WRITING_APP, b"zvon");
        let date_ns = (start_unix_ms as i64 - MATROSKA_EPOCH_UNIX_MS).saturating_mul(1_000_000);
        element(&mut info, DATE_UTC, &date_ns.to_be_bytes());
        // Room for the Duration, last so its offset is known: a Void element of the same 11
        // bytes (id 2 + size 1 + 8). A killed recording keeps it and has no Duration, which
        // players read as "unknown" (a Duration of 0 they would believe).
        element(&mut info, VOID, &[0; 9]);
        put_id(&mut head, INFO);
        put_size(&mut head, info.len() as u64);
        let duration_at = (head.len() + info.len() - 11) as u64;
        head.extend_from_slice(&info);
        master(&mut head, TRACKS, |b| {
            master(b, TRACK_ENTRY, |t| {
                uint(t, TRACK_NUMBER, 1);
                uint(t, TRACK_UID, 1);
                uint(t, FLAG_LACING, 0);
                match codec {
                    Codec::Vp8 { width, height } => {
                        uint(t, TRACK_TYPE, 1);
                        element(t, CODEC_ID, b"V_VP8");
                        master(t, VIDEO, |v| {
                            uint(v, PIXEL_WIDTH, u64::from(width));
                            uint(v, PIXEL_HEIGHT, u64::from(height));
                        });
                    }
                    Codec::Opus => {
                        uint(t, TRACK_TYPE, 2);
                        element(t, CODEC_ID, b"A_OPUS");
                        element(t, CODEC_PRIVATE, &opus_head());
                        uint(t, CODEC_DELAY, 0);
                        uint(t, SEEK_PRE_ROLL, 80_000_000);
                        master(t, AUDIO, |a| {
                            float(a, SAMPLING_FREQUENCY, 48_000.0);
                            uint(a, CHANNELS, 2);
                        });
                    }
                }
            });
        });
        out.write_all(&head)?;
        Ok(WebmWriter {
            out,
            blocks: Vec::with_capacity(256 * 1024),
            cluster_tc: None,
            last_tc: 0,
            video: matches!(codec, Codec::Vp8 { .. }),
            segment_size_at,
            segment_start,
            duration_at,
            written: head.len() as u64,
        })
    }

    /// Adds a frame at `tc_ms` from the file's start (kept monotonic). A full cluster is
    /// written out first.
    pub fn write_frame(&mut self, tc_ms: u64, keyframe: bool, data: &[u8]) -> io::Result<()> {
        let tc = tc_ms.max(self.last_tc);
        let new_cluster = match self.cluster_tc {
            None => true,
            Some(start) => tc - start >= CLUSTER_MS || (self.video && keyframe),
        };
        if new_cluster {
            self.flush()?;
            self.cluster_tc = Some(tc);
        }
        let rel = (tc - self.cluster_tc.unwrap_or(tc)) as i16;
        put_id(&mut self.blocks, SIMPLE_BLOCK);
        put_size(&mut self.blocks, data.len() as u64 + 4);
        self.blocks.push(0x81); // track 1
        self.blocks.extend_from_slice(&rel.to_be_bytes());
        self.blocks.push(if keyframe { 0x80 } else { 0x00 });
        self.blocks.extend_from_slice(data);
        self.last_tc = tc;
        Ok(())
    }

    /// Writes the open cluster, if any.
    pub fn flush(&mut self) -> io::Result<()> {
        let Some(tc) = self.cluster_tc.take() else {
            return Ok(());
        };
        if self.blocks.is_empty() {
            return Ok(());
        }
        let mut timecode = Vec::with_capacity(10);
        uint(&mut timecode, CLUSTER_TIMECODE, tc);
        let mut head = Vec::with_capacity(16);
        put_id(&mut head, CLUSTER);
        put_size8(&mut head, (timecode.len() + self.blocks.len()) as u64);
        head.extend_from_slice(&timecode);
        self.out.write_all(&head)?;
        self.out.write_all(&self.blocks)?;
        self.written += (head.len() + self.blocks.len()) as u64;
        self.blocks.clear();
        Ok(())
    }

    /// Milliseconds from the first frame to the last.
    pub fn last_timecode(&self) -> u64 {
        self.last_tc
    }

    /// Writes what is open and patches the Segment size and the Duration (`tail_ms`, the
    /// last frame's own length, added). Returns the duration in milliseconds.
    pub fn finish(mut self, tail_ms: u64) -> io::Result<u64> {
        self.flush()?;
        let duration = self.last_tc + tail_ms;
        let mut field = Vec::with_capacity(11);
        float(&mut field, DURATION, duration as f64);
        self.out.seek(SeekFrom::Start(self.duration_at))?;
        self.out.write_all(&field)?;
        let mut size = Vec::with_capacity(8);
        put_size8(&mut size, self.written - self.segment_start);
        self.out.seek(SeekFrom::Start(self.segment_size_at))?;
        self.out.write_all(&size)?;
        self.out.seek(SeekFrom::End(0))?;
        self.out.flush()?;
        Ok(duration)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    #[test]
    fn sizes_are_shortest_vints() {
        let enc = |n| {
            let mut b = vec![];
            put_size(&mut b, n);
            b
        };
        assert_eq!(enc(0), [0x80]);
        assert_eq!(enc(126), [0xFE]);
        // 127 would read as "unknown" in one byte.
        assert_eq!(enc(127), [0x40, 0x7F]);
        assert_eq!(enc(16_382), [0x7F, 0xFE]);
        assert_eq!(enc(16_383), [0x20, 0x3F, 0xFF]);
    }

    fn find(hay: &[u8], needle: &[u8]) -> Vec<usize> {
        hay.windows(needle.len())
            .enumerate()
            .filter(|(_, w)| *w == needle)
            .map(|(i, _)| i)
            .collect()
    }

    #[test]
    fn clusters_go_out_whole_each_second_and_finish_patches_the_header() {
        let mut cur = Cursor::new(Vec::new());
        let cluster_id = CLUSTER.to_be_bytes();
        {
            let mut w = WebmWriter::new(&mut cur, Codec::Opus, 1_700_000_000_000).unwrap();
            for i in 0..150u64 {
                w.write_frame(i * 20, true, &[0xAB; 40]).unwrap();
            }
            // 3 s of 20 ms frames: clusters at 0 and 1000 are out, the one at 2000 is open,
            // and the Segment's size is still unknown (what a killed recording leaves).
            assert_eq!(find(w.out.get_ref(), &cluster_id).len(), 2);
            assert_eq!(find(w.out.get_ref(), &UNKNOWN_SIZE).len(), 1);
            assert_eq!(w.finish(20).unwrap(), 3000);
        }
        let out = cur.into_inner();
        assert_eq!(find(&out, &cluster_id).len(), 3);
        assert!(find(&out, &UNKNOWN_SIZE).is_empty());
        let mut duration = vec![0x44, 0x89, 0x88];
        duration.extend_from_slice(&3000f64.to_be_bytes());
        assert_eq!(find(&out, &duration).len(), 1);
        assert!(out.starts_with(&EBML.to_be_bytes()));
    }

    #[test]
    fn a_video_keyframe_opens_a_cluster_and_timecodes_never_go_back() {
        let mut cur = Cursor::new(Vec::new());
        {
            let mut w = WebmWriter::new(
                &mut cur,
                Codec::Vp8 {
                    width: 640,
                    height: 480,
                },
                0,
            )
            .unwrap();
            w.write_frame(0, true, &[1; 10]).unwrap();
            w.write_frame(33, false, &[2; 10]).unwrap();
            w.write_frame(20, false, &[3; 10]).unwrap();
            assert_eq!(w.last_timecode(), 33);
            w.write_frame(66, true, &[4; 10]).unwrap();
            assert_eq!(w.finish(33).unwrap(), 99);
        }
        let out = cur.into_inner();
        assert_eq!(find(&out, &CLUSTER.to_be_bytes()).len(), 2);
        assert_eq!(find(&out, b"V_VP8").len(), 1);
    }
}
