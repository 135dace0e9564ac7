//! The virtio-net header and software TCP segmentation (xvs-stage `offload`, `segment`).
//!
//! Mode 0 (raw): a 10-byte virtio-net header and arbitrary frame bytes. The header re-emits
//! to the same bytes; checksum completion and segmentation never panic, and a segmenter that
//! accepts the frame gives exactly `remaining()` segments, none longer than
//! `max_segment_len()`.
//!
//! Mode 1 (built): a valid TCP super-frame (IPv4 or IPv6, TCP options, FIN/PSH/CWR, sequence
//! number and IPv4 id near wrapping) built by etherparse from fuzzer-chosen fields, cut at a
//! fuzzer-chosen MSS. The segments' payloads concatenated are the original payload; each
//! segment is at most MSS + headers; sequence numbers and IPv4 ids advance; FIN and PSH only
//! on the last segment, CWR only on the first; every segment's IP and TCP checksums are
//! valid; `segment_into_pool` makes the same segments and gives every frame back.
#![no_main]

use std::cell::RefCell;

use arbitrary::{Arbitrary, Unstructured};
use etherparse::{NetSlice, PacketBuilder, SlicedPacket, TransportSlice};
use libfuzzer_sys::fuzz_target;
use xvs_stage::checksum::complete_checksum;
use xvs_stage::frame::{FRAME_CAPACITY, FramePool};
use xvs_stage::offload::{Offload, VNET_HDR_LEN};
use xvs_stage::segment::{SegmentEnd, Segmenter, segment_into_pool};
use xvs_stage::testing::checksums_ok;

thread_local! {
    /// One pool for every run (a pool reserves its jumbo frames up front).
    static POOL: RefCell<FramePool> =
        RefCell::new(FramePool::new_heap(64).expect("a 64-frame pool"));
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        raw(rest);
    } else {
        let _ = built(&mut Unstructured::new(rest));
    }
});

fn raw(data: &[u8]) {
    let Some((hdr, frame)) = data.split_first_chunk::<VNET_HDR_LEN>() else {
        return;
    };
    let off = Offload::parse(hdr);
    let mut again = [0u8; VNET_HDR_LEN];
    off.emit(&mut again);
    assert_eq!(&again, hdr, "virtio-net header re-emits to the same bytes");
    let mut f = frame.to_vec();
    let _ = complete_checksum(&mut f, &off);
    let Ok(mut seg) = Segmenter::new(frame, &off) else {
        return;
    };
    let (count, max) = (seg.remaining(), seg.max_segment_len());
    let mut out = vec![0u8; max];
    let mut made = 0;
    while let Some(r) = seg.next_into(&mut out) {
        let n = r.expect("a buffer of max_segment_len() is never too small");
        assert!(n <= max);
        made += 1;
        assert!(made <= count);
    }
    assert_eq!(made, count);
}

#[derive(Debug, Arbitrary)]
struct Params {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    seq: u32,
    ip_id: u16,
    window: u16,
    fin: bool,
    psh: bool,
    cwr: bool,
    ecn_gso: bool,
    /// TCP option words (0..=10).
    option_words: u8,
    payload_len: u16,
    mss: u16,
    fill: u8,
}

const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

fn built(u: &mut Unstructured<'_>) -> arbitrary::Result<()> {
    let p = Params::arbitrary(u)?;
    let payload_len = usize::from(p.payload_len) % 24_000;
    let payload: Vec<u8> = (0..payload_len)
        .map(|i| p.fill.wrapping_add((i as u8).wrapping_mul(31)) ^ (i >> 8) as u8)
        .collect();
    // At most 128 segments, so that each run stays short.
    let mss = usize::from(p.mss % 9000)
        .max(1)
        .max(payload_len.div_ceil(128));
    let opts = vec![1u8; usize::from(p.option_words % 11) * 4]; // NOPs
    let eth = PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
    let ip = if p.v6 {
        eth.ipv6(p.src, p.dst, 64)
    } else {
        let s: [u8; 4] = p.src[..4].try_into().unwrap_or_default();
        let d: [u8; 4] = p.dst[..4].try_into().unwrap_or_default();
        eth.ipv4(s, d, 64)
    };
    let mut b = ip.tcp(p.sport, p.dport, p.seq, p.window).ack(1);
    if p.fin {
        b = b.fin();
    }
    if p.psh {
        b = b.psh();
    }
    if p.cwr {
        b = b.cwr();
    }
    let b = b.options_raw(&opts).expect("option words fit");
    let mut frame = Vec::new();
    b.write(&mut frame, &payload).expect("a valid super-frame");
    let l4 = if p.v6 { 54 } else { 34 };
    if !p.v6 {
        frame[18..20].copy_from_slice(&p.ip_id.to_be_bytes());
    }
    let hdrs = l4 + 20 + opts.len();
    let base = if p.v6 {
        Offload::GSO_TCPV6
    } else {
        Offload::GSO_TCPV4
    };
    let off = Offload {
        flags: Offload::F_NEEDS_CSUM,
        gso_type: base | if p.ecn_gso { Offload::GSO_ECN } else { 0 },
        hdr_len: hdrs as u16,
        gso_size: mss as u16,
        csum_start: l4 as u16,
        csum_offset: 16,
    };
    let mut seg = Segmenter::new(&frame, &off).expect("a valid super-frame segments");
    let want = payload_len.div_ceil(mss).max(1);
    assert_eq!(seg.remaining(), want);
    assert!(seg.max_segment_len() <= hdrs + mss);
    let mut out = vec![0u8; seg.max_segment_len()];
    let mut segments = Vec::with_capacity(want);
    while let Some(r) = seg.next_into(&mut out) {
        let n = r.expect("segment fits max_segment_len()");
        segments.push(out[..n].to_vec());
    }
    assert_eq!(segments.len(), want);

    let mut joined = Vec::with_capacity(payload_len);
    for (i, s) in segments.iter().enumerate() {
        assert!(
            s.len() <= hdrs + mss,
            "segment {i}: {} > {hdrs} + {mss}",
            s.len()
        );
        let sp = SlicedPacket::from_ethernet(s).expect("a segment parses");
        let Some(TransportSlice::Tcp(tcp)) = &sp.transport else {
            panic!("segment {i} is not TCP");
        };
        assert_eq!(
            tcp.sequence_number(),
            p.seq.wrapping_add(joined.len() as u32),
            "segment {i}: sequence number"
        );
        let last = i + 1 == segments.len();
        let flags = s[l4 + 13];
        assert_eq!(flags & TCP_FIN != 0, p.fin && last, "segment {i}: FIN");
        assert_eq!(flags & TCP_PSH != 0, p.psh && last, "segment {i}: PSH");
        assert_eq!(flags & TCP_CWR != 0, p.cwr && i == 0, "segment {i}: CWR");
        assert_eq!(tcp.options(), &opts[..], "segment {i}: options");
        match &sp.net {
            Some(NetSlice::Ipv4(ip)) => {
                assert_eq!(
                    ip.header().identification(),
                    p.ip_id.wrapping_add(i as u16),
                    "segment {i}: IPv4 id"
                );
                assert!(checksums_ok(s), "segment {i}: checksums");
            }
            Some(NetSlice::Ipv6(ip)) => {
                let h = ip.header().to_header();
                let want = tcp.to_header().calc_checksum_ipv6(&h, tcp.payload());
                assert_eq!(Ok(tcp.checksum()), want, "segment {i}: TCP checksum");
            }
            _ => panic!("segment {i} is not IP"),
        }
        joined.extend_from_slice(tcp.payload());
    }
    assert!(
        joined == payload,
        "segments' payloads concatenated are the payload"
    );

    if hdrs + mss.min(payload_len) <= FRAME_CAPACITY {
        POOL.with_borrow_mut(|pool| {
            let (cap, jumbo) = (pool.available(), pool.jumbo_available());
            let Some(sf) = pool.alloc_for(frame.len()) else {
                return;
            };
            let mut sf = sf;
            sf.set_len(frame.len());
            pool.data_mut(&mut sf).copy_from_slice(&frame);
            let mut got = Vec::new();
            let (made, end) = segment_into_pool(pool, &sf, &off, usize::MAX, &mut |pool, f| {
                got.push(pool.data(&f).to_vec());
                pool.free(f);
            });
            pool.free(sf);
            assert_eq!(pool.available(), cap, "every frame back in the pool");
            assert_eq!(pool.jumbo_available(), jumbo, "every jumbo frame back");
            assert_eq!((made, end), (want, SegmentEnd::Done));
            assert!(got == segments, "segment_into_pool makes the same segments");
        });
    }
    Ok(())
}
