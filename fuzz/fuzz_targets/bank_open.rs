//! Fuzz target: `BankReader::open` on arbitrary bytes, then every read the
//! reader offers. It must return errors, never panic, read out of bounds or
//! allocate by an untrusted size.
//!
//! Each input is tried twice: as is, and with its length field and every
//! CRC-32 the header locates recomputed ("fixed up"), so mutations reach the
//! manifest and section validation instead of stopping at a checksum.
#![no_main]

use futures::executor::block_on;
use latentlens::bank::format::{HEADER_LEN, SECTION_ENTRY_LEN};
use latentlens::bank::BankReader;
use latentlens::fetch::MemorySource;
use libfuzzer_sys::fuzz_target;

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// Recomputes file length and checksums wherever the header points inside the input.
fn fix_up(data: &[u8]) -> Option<Vec<u8>> {
    if data.len() < HEADER_LEN {
        return None;
    }
    let mut b = data.to_vec();
    let total = b.len() as u64;
    b[16..24].copy_from_slice(&total.to_le_bytes());
    let m_off = le64(&b, 24);
    let m_len = u64::from(le32(&b, 32));
    if let Some(end) = m_off.checked_add(m_len).filter(|&e| e <= total) {
        let crc = crc32(&b[m_off as usize..end as usize]);
        b[36..40].copy_from_slice(&crc.to_le_bytes());
    }
    let t_off = le64(&b, 40);
    let t_len = u64::from(le32(&b, 48)) * SECTION_ENTRY_LEN as u64;
    if let Some(t_end) = t_off.checked_add(t_len).filter(|&e| e <= total) {
        for e in (t_off..t_end).step_by(SECTION_ENTRY_LEN) {
            let e = e as usize;
            let off = le64(&b, e + 8);
            let len = le64(&b, e + 16);
            if let Some(end) = off.checked_add(len).filter(|&x| x <= total) {
                let crc = crc32(&b[off as usize..end as usize]);
                b[e + 24..e + 28].copy_from_slice(&crc.to_le_bytes());
            }
        }
        let crc = crc32(&b[t_off as usize..t_end as usize]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
    }
    let crc = crc32(&b[0..60]);
    b[60..64].copy_from_slice(&crc.to_le_bytes());
    Some(b)
}

fn crc32(b: &[u8]) -> u32 {
    // Bitwise CRC-32 (IEEE), independent of the crate's crc32fast.
    let mut c = !0u32;
    for &x in b {
        c ^= u32::from(x);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                (c >> 1) ^ 0xEDB8_8320
            } else {
                c >> 1
            };
        }
    }
    !c
}

fn exercise(bytes: Vec<u8>) {
    block_on(async {
        let Ok(r) = BankReader::open(Box::new(MemorySource::new(bytes))).await else {
            return;
        };
        let _ = r.manifest().to_json();
        for s in 0..r.n_layers() {
            let _ = r.quantizer_blob(s).await;
            for c in 0..r.n_chunks() {
                let _ = r.codes_chunk(s, c).await;
                let _ = r.refine_chunk(s, c).await;
            }
        }
        for c in 0..r.n_chunks() {
            let _ = r.chunk_rows(c);
            if let Ok(rows) = r.row_meta_chunk(c).await {
                for m in rows.iter().take(4) {
                    if let Ok(s) = r.sentence(m.sentence_id).await {
                        let _ = m.span_in(&s);
                    }
                }
            }
        }
        let spb = u64::from(r.manifest().sentences_per_block);
        for b in 0..r.n_sentence_blocks() {
            let first = b * spb;
            let last = (first + spb).min(r.n_sentences()).saturating_sub(1);
            let _ = r.sentence(first as u32).await;
            let _ = r.sentence(last as u32).await;
        }
        let _ = r.row_meta(r.n_rows().saturating_sub(1)).await;
        let _ = r.sentence(u32::MAX).await;
        let _ = r.codes_chunk(r.n_layers(), 0).await;
    });
}

fuzz_target!(|data: &[u8]| {
    exercise(data.to_vec());
    if let Some(fixed) = fix_up(data) {
        exercise(fixed);
    }
});
