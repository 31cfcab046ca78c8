//! Bank file format: round trip through the writer and the reader, the
//! number of range reads, and every kind of bad input (each must give the
//! named `BankError`, never a panic).

use std::cell::Cell;
use std::rc::Rc;

use futures::executor::block_on;
use futures::future::LocalBoxFuture;
use latentlens::bank::format::{HEADER_LEN, PREFIX_READ_LEN, SECTION_ENTRY_LEN};
use latentlens::bank::{
    BankError, BankManifest, BankReader, BankWriter, CorpusInfo, LayerData, ModelInfo,
    QuantizerInfo, RowMeta, SectionKind, ToolInfo,
};
use latentlens::fetch::{ByteSource, FetchError, MemorySource};

// ---------------------------------------------------------------- fixtures

/// Deterministic xorshift bytes (the bank does not interpret codes).
fn bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Sentences with multi-byte UTF-8 (é: 2 bytes, ☕: 3 bytes, 🦀: 4 bytes).
fn sentences(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("The café on street {i} serves strong coffee ☕."),
            1 => format!("A crab 🦀 walked {i} steps along the naïve shore."),
            2 => format!("Sentence number {i} is plain ASCII text."),
            _ => String::new(), // empty sentences are legal
        })
        .collect()
}

/// One row per whitespace-separated word of each non-empty sentence, spans in UTF-8 bytes.
fn rows_for(sentences: &[String]) -> Vec<RowMeta> {
    let mut rows = Vec::new();
    for (sid, s) in sentences.iter().enumerate() {
        let mut pos = 1; // position 0 would be BOS
        for (start, word) in s.split(' ').scan(0usize, |at, w| {
            let start = *at;
            *at += w.len() + 1;
            Some((start, w))
        }) {
            if word.is_empty() {
                continue;
            }
            rows.push(RowMeta {
                token_id: (start * 31 + sid) as u32 % 49152,
                sentence_id: sid as u32,
                span_start: start as u32,
                span_end: (start + word.len()) as u32,
                position: pos,
            });
            pos += 1;
        }
    }
    rows
}

struct Parts {
    manifest: BankManifest,
    quantizers: Vec<Vec<u8>>,
    codes: Vec<Vec<u8>>,
    refine: Vec<Vec<u8>>,
    rows: Vec<RowMeta>,
    sentences: Vec<String>,
}

fn parts(code_bytes: u32, refine_bytes: u32) -> Parts {
    let sentences = sentences(300);
    let rows = rows_for(&sentences);
    let n = rows.len();
    let layers = vec![4u32, 9, 12];
    let manifest = BankManifest {
        model: ModelInfo {
            name: "SmolLM2-135M-Instruct".into(),
            fingerprint: "sha256:0123abcd".into(),
        },
        hidden_size: 576,
        layers: layers.clone(),
        rows: n as u64,
        rows_per_chunk: 256,
        sentences: sentences.len() as u64,
        sentences_per_block: 64,
        corpus: CorpusInfo {
            name: "synthetic".into(),
            description: "test sentences".into(),
        },
        quantizer: QuantizerInfo {
            kind: "pq".into(),
            params: serde_json::json!({"m": code_bytes, "ksub": 256, "dsub": 576 / code_bytes}),
            code_bytes,
            refine_bytes,
        },
        tool: ToolInfo {
            name: "latentlens".into(),
            version: env!("CARGO_PKG_VERSION").into(),
        },
        exact: None,
    };
    Parts {
        quantizers: (0..layers.len())
            .map(|s| bytes(100 + s as u64, 1000 + 7 * s))
            .collect(),
        codes: (0..layers.len())
            .map(|s| bytes(200 + s as u64, n * code_bytes as usize))
            .collect(),
        refine: (0..layers.len())
            .map(|s| bytes(300 + s as u64, n * refine_bytes as usize))
            .collect(),
        manifest,
        rows,
        sentences,
    }
}

fn write(p: &Parts) -> Result<Vec<u8>, BankError> {
    let layers = (0..p.quantizers.len())
        .map(|s| LayerData {
            quantizer: &p.quantizers[s],
            codes: &p.codes[s],
            refine: (p.manifest.quantizer.refine_bytes > 0).then(|| p.refine[s].as_slice()),
        })
        .collect();
    BankWriter::new(p.manifest.clone(), layers, &p.rows, &p.sentences)?.to_vec()
}

fn open(bytes: Vec<u8>) -> Result<BankReader, BankError> {
    block_on(BankReader::open(Box::new(MemorySource::new(bytes))))
}

/// Reads every section and sentence through the public API.
fn read_all(r: &BankReader) -> Result<(), BankError> {
    block_on(async {
        for s in 0..r.n_layers() {
            r.quantizer_blob(s).await?;
            for c in 0..r.n_chunks() {
                r.codes_chunk(s, c).await?;
                if r.refine_bytes() > 0 {
                    r.refine_chunk(s, c).await?;
                }
            }
        }
        for c in 0..r.n_chunks() {
            r.row_meta_chunk(c).await?;
        }
        for id in 0..r.n_sentences() {
            r.sentence(id as u32).await?;
        }
        Ok(())
    })
}

// ------------------------------------------------- byte surgery on a valid file

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn manifest_range(b: &[u8]) -> std::ops::Range<usize> {
    let off = le64(b, 24) as usize;
    off..off.saturating_add(le32(b, 32) as usize)
}

fn table_offset(b: &[u8]) -> usize {
    le64(b, 40) as usize
}

/// Byte offset of table entry `i`.
fn entry_at(b: &[u8], i: usize) -> usize {
    table_offset(b) + i * SECTION_ENTRY_LEN
}

fn n_entries(b: &[u8]) -> usize {
    le32(b, 48) as usize
}

/// Index of the table entry with this (kind code, slot, chunk).
fn find_entry(b: &[u8], kind: u16, slot: u16, chunk: u32) -> usize {
    (0..n_entries(b))
        .find(|&i| {
            let e = entry_at(b, i);
            u16::from_le_bytes([b[e], b[e + 1]]) == kind
                && u16::from_le_bytes([b[e + 2], b[e + 3]]) == slot
                && le32(b, e + 4) == chunk
        })
        .expect("entry exists in the fixture")
}

/// Recomputes the header, manifest and table checksums (not the sections'),
/// so a test reaches the check behind them.
fn reseal(b: &mut [u8]) {
    let m = manifest_range(b);
    let crc = crc32fast::hash(&b[m]);
    put32(b, 36, crc);
    let t = table_offset(b);
    let crc = crc32fast::hash(&b[t..t + n_entries(b) * SECTION_ENTRY_LEN]);
    put32(b, 52, crc);
    let crc = crc32fast::hash(&b[0..60]);
    put32(b, 60, crc);
}

/// [`reseal`] for damaged files: only where the header's offsets are in bounds.
fn try_reseal(b: &mut [u8]) {
    let m = manifest_range(b);
    if let Some(crc) = b.get(m).map(crc32fast::hash) {
        put32(b, 36, crc);
    }
    let t = table_offset(b);
    let t_end = t.checked_add(n_entries(b) * SECTION_ENTRY_LEN);
    if let Some(crc) = t_end.and_then(|e| b.get(t..e)).map(crc32fast::hash) {
        put32(b, 52, crc);
    }
    let crc = crc32fast::hash(&b[0..60]);
    put32(b, 60, crc);
}

/// Also recomputes the checksum of section entry `i`'s bytes, then reseals.
fn reseal_section(b: &mut [u8], i: usize) {
    let e = entry_at(b, i);
    let (off, len) = (le64(b, e + 8) as usize, le64(b, e + 16) as usize);
    let crc = crc32fast::hash(&b[off..off + len]);
    put32(b, e + 24, crc);
    reseal(b);
}

/// Replaces the manifest JSON by `edit(json)`, padded with spaces to the same
/// length (JSON allows trailing whitespace), and reseals.
fn edit_manifest(b: &mut [u8], edit: impl FnOnce(&mut serde_json::Value)) {
    let m = manifest_range(b);
    let mut v: serde_json::Value = serde_json::from_slice(&b[m.clone()]).unwrap();
    edit(&mut v);
    let mut json = serde_json::to_vec(&v).unwrap();
    if json.len() > m.len() && v.get("corpus").is_some() {
        v["corpus"]["description"] = "".into(); // make room for longer numbers
        json = serde_json::to_vec(&v).unwrap();
    }
    assert!(json.len() <= m.len(), "edited manifest must not grow");
    json.resize(m.len(), b' ');
    b[m].copy_from_slice(&json);
    reseal(b);
}

/// A named edit of the manifest JSON.
type ManifestEdit = Box<dyn Fn(&mut serde_json::Value)>;
/// A named edit of the writer's inputs.
type PartsEdit = Box<dyn Fn(&mut Parts)>;

fn valid() -> Vec<u8> {
    write(&parts(16, 8)).unwrap()
}

fn open_err(b: Vec<u8>) -> BankError {
    match open(b) {
        Ok(_) => panic!("a corrupt bank was accepted"),
        Err(e) => e,
    }
}

// ------------------------------------------------------------- round trip

#[test]
fn round_trip_preserves_every_section_row_and_sentence() {
    let p = parts(16, 8);
    let r = open(write(&p).unwrap()).unwrap();
    assert_eq!(r.manifest(), &p.manifest);
    assert_eq!(r.n_layers(), 3);
    assert_eq!(r.n_rows(), p.rows.len() as u64);
    assert!(
        r.n_rows() > 512,
        "fixture should span several chunks, has {} rows",
        r.n_rows()
    );
    assert_eq!(r.n_chunks(), (p.rows.len() as u64).div_ceil(256));
    assert_eq!(r.n_sentence_blocks(), 5); // 300 sentences / 64
    assert_eq!(r.header().major, 1);
    block_on(async {
        for s in 0..3 {
            assert_eq!(r.quantizer_blob(s).await.unwrap(), p.quantizers[s]);
            let mut codes = Vec::new();
            let mut refine = Vec::new();
            for c in 0..r.n_chunks() {
                let rows = r.chunk_rows(c).unwrap();
                let chunk = r.codes_chunk(s, c).await.unwrap();
                assert_eq!(chunk.len() as u64, (rows.end - rows.start) * 16);
                codes.extend(chunk);
                refine.extend(r.refine_chunk(s, c).await.unwrap());
            }
            assert_eq!(codes, p.codes[s]);
            assert_eq!(refine, p.refine[s]);
        }
        let mut metas = Vec::new();
        for c in 0..r.n_chunks() {
            metas.extend(r.row_meta_chunk(c).await.unwrap());
        }
        assert_eq!(metas, p.rows);
        for (id, s) in p.sentences.iter().enumerate() {
            assert_eq!(&r.sentence(id as u32).await.unwrap(), s);
        }
        // Spans are UTF-8 byte ranges: the word of each row is found again.
        for (row, m) in p.rows.iter().enumerate() {
            assert_eq!(r.row_meta(row as u64).await.unwrap(), *m);
            let sentence = &p.sentences[m.sentence_id as usize];
            let word = m.span_in(sentence).unwrap();
            assert!(
                !word.is_empty() && !word.contains(' '),
                "row {row}: {word:?}"
            );
        }
        let crab = p
            .rows
            .iter()
            .find(|m| {
                p.sentences[m.sentence_id as usize][m.span_start as usize..].starts_with('🦀')
            })
            .unwrap();
        assert_eq!(crab.span_end - crab.span_start, 4, "🦀 is 4 UTF-8 bytes");
    });
}

#[test]
fn writer_output_is_deterministic() {
    let p = parts(16, 8);
    assert_eq!(write(&p).unwrap(), write(&p).unwrap());
}

#[test]
fn bank_without_refinement_round_trips_and_refuses_refine_reads() {
    let p = parts(8, 0);
    let r = open(write(&p).unwrap()).unwrap();
    read_all(&r).unwrap();
    assert!(r.sections().iter().all(|e| e.kind != SectionKind::Refine));
    assert!(matches!(
        block_on(r.refine_chunk(0, 0)),
        Err(BankError::NoRefinement)
    ));
}

#[test]
fn single_row_single_sentence_bank_round_trips() {
    let mut p = parts(4, 0);
    p.sentences = vec!["ok".into()];
    p.rows = vec![RowMeta {
        token_id: 7,
        sentence_id: 0,
        span_start: 0,
        span_end: 2,
        position: 1,
    }];
    p.manifest.rows = 1;
    p.manifest.sentences = 1;
    p.codes = vec![vec![1, 2, 3, 4]; 3];
    let r = open(write(&p).unwrap()).unwrap();
    assert_eq!(r.n_chunks(), 1);
    assert_eq!(block_on(r.codes_chunk(2, 0)).unwrap(), vec![1, 2, 3, 4]);
    assert_eq!(block_on(r.sentence(0)).unwrap(), "ok");
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn bank_reads_from_a_local_file() {
    let bytes = valid();
    let path = std::env::temp_dir().join(format!(
        "latentlens-bank-test-{}.llbank",
        std::process::id()
    ));
    std::fs::write(&path, &bytes).unwrap();
    let r = BankReader::open_file(&path);
    let _ = std::fs::remove_file(&path);
    let r = r.unwrap();
    read_all(&r).unwrap();
    assert_eq!(block_on(r.sentence(1)).unwrap(), sentences(2)[1]);
}

#[test]
fn missing_file_names_the_path() {
    let err = latentlens::fetch::FileSource::open("/nonexistent/dir/bank.llbank").unwrap_err();
    assert!(matches!(err, FetchError::Io { .. }));
    assert!(
        err.to_string().contains("/nonexistent/dir/bank.llbank"),
        "{err}"
    );
}

// ------------------------------------------------------- range-read economy

/// A source that counts reads and bytes, to check the layout's promise.
struct Counting {
    inner: MemorySource,
    reads: Rc<Cell<usize>>,
    bytes: Rc<Cell<usize>>,
}

impl ByteSource for Counting {
    fn name(&self) -> &str {
        "counting"
    }
    fn total_len(&self) -> LocalBoxFuture<'_, Result<u64, FetchError>> {
        self.inner.total_len()
    }
    fn read(&self, offset: u64, len: usize) -> LocalBoxFuture<'_, Result<Vec<u8>, FetchError>> {
        self.reads.set(self.reads.get() + 1);
        self.bytes.set(self.bytes.get() + len);
        self.inner.read(offset, len)
    }
}

/// The source and its (reads, bytes read) counters.
fn counting(bytes: Vec<u8>) -> (Box<Counting>, impl Fn() -> (usize, usize)) {
    let (reads, total) = (Rc::new(Cell::new(0)), Rc::new(Cell::new(0)));
    let src = Counting {
        inner: MemorySource::new(bytes),
        reads: reads.clone(),
        bytes: total.clone(),
    };
    (Box::new(src), move || (reads.get(), total.get()))
}

#[test]
fn open_is_one_read_and_a_sentence_is_one_more() {
    let (src, count) = counting(valid());
    let r = block_on(BankReader::open(src)).unwrap();
    assert_eq!(
        count().0,
        1,
        "header + manifest + table must come in one read"
    );
    block_on(r.sentence(70)).unwrap();
    assert_eq!(count().0, 2, "a sentence is one range read of its block");
    block_on(r.sentence(71)).unwrap();
    assert_eq!(
        count().0,
        2,
        "a second sentence of the same block comes from the cache"
    );
    let before = count().1;
    block_on(r.codes_chunk(1, 0)).unwrap();
    assert_eq!(count().0, 3);
    assert_eq!(
        count().1 - before,
        256 * 16,
        "a codes chunk is exactly its rows × code_bytes"
    );
}

#[test]
fn large_manifest_needs_only_a_second_read() {
    let mut p = parts(16, 8);
    p.manifest.corpus.description = "x".repeat(PREFIX_READ_LEN as usize + 1000);
    let (src, count) = counting(write(&p).unwrap());
    let r = block_on(BankReader::open(src)).unwrap();
    assert_eq!(count().0, 2);
    assert_eq!(
        r.manifest().corpus.description.len(),
        PREFIX_READ_LEN as usize + 1000
    );
    read_all(&r).unwrap();
}

// ------------------------------------------------------------- bad input

#[test]
fn truncated_file_is_reported_with_advice() {
    let b = valid();
    for cut in [
        0,
        10,
        HEADER_LEN - 1,
        HEADER_LEN,
        200,
        b.len() / 2,
        b.len() - 1,
    ] {
        let err = open_err(b[..cut].to_vec());
        assert!(
            matches!(err, BankError::Truncated { .. }),
            "cut at {cut}: {err}"
        );
        assert!(err.to_string().contains("re-download"), "{err}");
    }
}

#[test]
fn appended_bytes_are_a_size_mismatch() {
    let mut b = valid();
    b.extend_from_slice(b"trailing");
    assert!(matches!(open_err(b), BankError::SizeMismatch { .. }));
}

#[test]
fn wrong_magic_is_not_a_bank() {
    let mut b = valid();
    b[1] = b'X';
    let err = open_err(b);
    assert!(matches!(err, BankError::BadMagic { .. }), "{err}");
    assert!(err.to_string().contains("not a latentlens bank"), "{err}");
    let err = open_err(
        b"{\"this\": \"is json, not a bank\", \"padding\": \"...........................\"}"
            .to_vec(),
    );
    assert!(matches!(err, BankError::BadMagic { .. }), "{err}");
}

#[test]
fn newer_major_version_asks_for_a_newer_latentlens() {
    let mut b = valid();
    b[8..10].copy_from_slice(&2u16.to_le_bytes());
    let err = open_err(b);
    assert!(
        matches!(err, BankError::UnsupportedVersion { major: 2, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("v2") && msg.contains("upgrade latentlens"),
        "{msg}"
    );
    let mut b = valid();
    b[8..10].copy_from_slice(&0u16.to_le_bytes());
    assert!(open_err(b).to_string().contains("rebuild the bank"));
}

#[test]
fn newer_minor_version_is_accepted() {
    let mut b = valid();
    b[10..12].copy_from_slice(&7u16.to_le_bytes());
    reseal(&mut b);
    let r = open(b).unwrap();
    assert_eq!(r.header().minor, 7);
}

#[test]
fn bad_header_checksum_is_reported() {
    let mut b = valid();
    b[13] ^= 1; // reserved byte, covered by the header CRC
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Checksum { what, .. } if what == "header"),
        "{err}"
    );
}

#[test]
fn bad_manifest_checksum_is_reported() {
    let mut b = valid();
    let m = manifest_range(&b);
    b[m.start + 5] ^= 0x20;
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Checksum { what, .. } if what == "manifest"),
        "{err}"
    );
}

#[test]
fn bad_table_checksum_is_reported() {
    let mut b = valid();
    let e = entry_at(&b, 3);
    b[e + 9] ^= 1;
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Checksum { what, .. } if what == "section table"),
        "{err}"
    );
}

#[test]
fn bad_section_checksum_is_reported_when_read() {
    let mut b = valid();
    let i = find_entry(&b, 2, 1, 2); // codes, slot 1, chunk 2
    let off = le64(&b, entry_at(&b, i) + 8) as usize;
    b[off + 3] ^= 0xFF;
    let r = open(b).unwrap(); // sections are verified when read, not at open
    block_on(r.codes_chunk(1, 1)).unwrap();
    let err = block_on(r.codes_chunk(1, 2)).unwrap_err();
    assert!(
        matches!(&err, BankError::Checksum { what, .. } if what.contains("codes section of layer slot 1 chunk 2")),
        "{err}"
    );
    assert!(err.to_string().contains("re-download"));
}

#[test]
fn corrupt_sentence_block_is_reported() {
    let mut b = valid();
    let i = find_entry(&b, 5, 0, 1);
    let off = le64(&b, entry_at(&b, i) + 8) as usize;
    b[off + 2] ^= 0x55;
    let r = open(b.clone()).unwrap();
    assert!(matches!(
        block_on(r.sentence(64)),
        Err(BankError::Checksum { .. })
    ));
    block_on(r.sentence(0)).unwrap(); // other blocks are fine
                                      // Same damage with a matching checksum: the deflate stream or its content is rejected.
    reseal_section(&mut b, i);
    let r = open(b).unwrap();
    match block_on(r.sentence(64)) {
        Err(BankError::Corrupt(msg)) => assert!(msg.contains("sentence block 1"), "{msg}"),
        Ok(s) => panic!("corrupt block decoded to {s:?}"),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[test]
fn sentence_block_inflating_past_its_recorded_size_is_refused() {
    let mut b = valid();
    let i = find_entry(&b, 5, 0, 0);
    let e = entry_at(&b, i);
    let raw = le32(&b, e + 28);
    put32(&mut b, e + 28, raw - 1);
    reseal(&mut b);
    let r = open(b).unwrap();
    let err = block_on(r.sentence(0)).unwrap_err();
    assert!(matches!(err, BankError::Corrupt(_)), "{err}");
}

#[test]
fn manifest_that_is_not_json_is_refused() {
    let mut b = valid();
    let m = manifest_range(&b);
    b[m.start] = b'#';
    reseal(&mut b);
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Manifest(msg) if msg.contains("not valid manifest JSON")),
        "{err}"
    );
}

#[test]
fn manifest_missing_a_field_names_it() {
    for field in [
        "rows",
        "hidden_size",
        "layers",
        "quantizer",
        "model",
        "sentences_per_block",
    ] {
        let mut b = valid();
        edit_manifest(&mut b, |v| {
            v.as_object_mut().unwrap().remove(field);
        });
        let err = open_err(b);
        assert!(
            matches!(&err, BankError::Manifest(msg) if msg.contains(field)),
            "{field}: {err}"
        );
    }
    let mut b = valid();
    edit_manifest(&mut b, |v| {
        v["quantizer"].as_object_mut().unwrap().remove("code_bytes");
    });
    assert!(open_err(b).to_string().contains("code_bytes"));
}

#[test]
fn manifest_with_insane_values_is_refused() {
    let cases: Vec<(&str, ManifestEdit)> = vec![
        ("hidden_size", Box::new(|v| v["hidden_size"] = 0.into())),
        (
            "rows_per_chunk",
            Box::new(|v| v["rows_per_chunk"] = 0.into()),
        ),
        (
            "listed twice",
            Box::new(|v| v["layers"] = serde_json::json!([4, 4, 12])),
        ),
        (
            "bank layers",
            Box::new(|v| v["layers"] = serde_json::json!([])),
        ),
        ("params", Box::new(|v| v["quantizer"]["params"] = 5.into())),
        (
            "fingerprint",
            Box::new(|v| v["model"]["fingerprint"] = "".into()),
        ),
        (
            "code_bytes",
            Box::new(|v| v["quantizer"]["code_bytes"] = 0.into()),
        ),
        (
            "chunk limit",
            Box::new(|v| v["rows_per_chunk"] = (1u64 << 24).into()),
        ),
        ("rows", Box::new(|v| v["rows"] = (1u64 << 50).into())),
        ("sentences", Box::new(|v| v["sentences"] = 0.into())),
        (
            "sections",
            Box::new(|v| {
                v["rows"] = (1u64 << 30).into();
                v["rows_per_chunk"] = 1.into();
            }),
        ),
    ];
    for (needle, edit) in cases {
        let mut b = valid();
        edit_manifest(&mut b, |v| edit(v));
        let err = open_err(b);
        assert!(
            matches!(&err, BankError::Manifest(msg) if msg.contains(needle)),
            "{needle}: {err}"
        );
    }
}

#[test]
fn counts_that_disagree_with_the_sections_are_refused() {
    // rows one short: the last chunk's codes are longer than the manifest implies.
    let mut b = valid();
    edit_manifest(&mut b, |v| {
        v["rows"] = (v["rows"].as_u64().unwrap() - 1).into()
    });
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("implies")),
        "{err}"
    );
    // code_bytes differs from the codes' lengths.
    let mut b = valid();
    edit_manifest(&mut b, |v| v["quantizer"]["code_bytes"] = 15.into());
    assert!(matches!(open_err(b), BankError::Layout(_)));
    // One layer more than there are sections.
    let mut b = valid();
    edit_manifest(&mut b, |v| v["layers"] = serde_json::json!([4, 9, 12, 20]));
    assert!(matches!(open_err(b), BankError::Layout(_)));
    // refine_bytes 0 while refinement sections exist.
    let mut b = valid();
    edit_manifest(&mut b, |v| v["quantizer"]["refine_bytes"] = 0.into());
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("refine")),
        "{err}"
    );
    // A missing section (table one entry short).
    let mut b = valid();
    let n = n_entries(&b) as u32;
    put32(&mut b, 48, n - 1);
    reseal(&mut b);
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("implies")),
        "{err}"
    );
}

#[test]
fn section_past_the_end_is_refused() {
    for (offset, len) in [
        (None, Some(1u64 << 40)),
        (Some(u64::MAX - 3), None),
        (Some(0), Some(u64::MAX)),
    ] {
        let mut b = valid();
        let e = entry_at(&b, 0);
        if let Some(o) = offset {
            put64(&mut b, e + 8, o);
        }
        if let Some(l) = len {
            put64(&mut b, e + 16, l);
        }
        reseal(&mut b);
        let err = open_err(b);
        assert!(
            matches!(err, BankError::Truncated { .. } | BankError::Layout(_)),
            "{err}"
        );
    }
}

#[test]
fn manifest_or_table_past_the_end_is_refused() {
    let mut b = valid();
    let len = b.len() as u64;
    put64(&mut b, 24, len - 2);
    reseal_header_only(&mut b);
    assert!(matches!(open_err(b), BankError::Truncated { .. }));
    let mut b = valid();
    put64(&mut b, 40, u64::MAX - 10);
    reseal_header_only(&mut b);
    assert!(matches!(open_err(b), BankError::Truncated { .. }));
}

fn reseal_header_only(b: &mut [u8]) {
    let crc = crc32fast::hash(&b[0..60]);
    put32(b, 60, crc);
}

#[test]
fn huge_counts_in_the_header_are_refused_before_allocating() {
    let mut b = valid();
    put32(&mut b, 48, u32::MAX);
    reseal_header_only(&mut b);
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("limit")),
        "{err}"
    );
    let mut b = valid();
    put32(&mut b, 32, u32::MAX);
    reseal_header_only(&mut b);
    assert!(matches!(open_err(b), BankError::Manifest(_)));
}

#[test]
fn overlapping_sections_are_refused() {
    // Two quantizer blobs pointing at the same bytes (lengths fixed up to match).
    let mut b = valid();
    let (e0, e1) = (entry_at(&b, 0), entry_at(&b, 1));
    let (off0, len0) = (le64(&b, e0 + 8), le64(&b, e0 + 16));
    put64(&mut b, e1 + 8, off0 + 4);
    put64(&mut b, e1 + 16, len0);
    reseal(&mut b);
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("overlaps")),
        "{err}"
    );
    // A section overlapping the section table.
    let mut b = valid();
    let t = table_offset(&b) as u64;
    put64(&mut b, e0 + 8, t + 8);
    reseal(&mut b);
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("section table")),
        "{err}"
    );
    // Manifest and table overlapping.
    let mut b = valid();
    let m = manifest_range(&b).start as u64;
    put64(&mut b, 40, m + 4);
    reseal_header_only(&mut b);
    assert!(matches!(
        open_err(b),
        BankError::Layout(_) | BankError::Checksum { .. }
    ));
}

#[test]
fn duplicate_and_misplaced_entries_are_refused() {
    // Entry 1 (quantizer slot 1) renamed to slot 0: slot 0 listed twice.
    let mut b = valid();
    let e1 = entry_at(&b, 1);
    b[e1 + 2..e1 + 4].copy_from_slice(&0u16.to_le_bytes());
    reseal(&mut b);
    let err = open_err(b);
    assert!(
        matches!(&err, BankError::Layout(msg) if msg.contains("twice")),
        "{err}"
    );
    // Layer slot beyond the manifest's layers.
    let mut b = valid();
    b[e1 + 2..e1 + 4].copy_from_slice(&9u16.to_le_bytes());
    reseal(&mut b);
    assert!(matches!(open_err(b), BankError::Layout(msg) if msg.contains("slot 9")));
    // Chunk beyond the last chunk.
    let mut b = valid();
    let i = find_entry(&b, 4, 0, 0);
    let e = entry_at(&b, i);
    put32(&mut b, e + 4, 1000);
    reseal(&mut b);
    assert!(matches!(open_err(b), BankError::Layout(msg) if msg.contains("chunk 1000")));
}

#[test]
fn unknown_required_section_kind_asks_for_an_upgrade() {
    let mut b = valid();
    let e = entry_at(&b, 2);
    b[e..e + 2].copy_from_slice(&9u16.to_le_bytes());
    reseal(&mut b);
    let err = open_err(b);
    assert!(
        matches!(err, BankError::UnknownSection { kind: 9, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("upgrade latentlens"));
}

#[test]
fn row_metadata_naming_a_missing_sentence_is_refused() {
    let mut b = valid();
    let i = find_entry(&b, 4, 0, 1);
    let off = le64(&b, entry_at(&b, i) + 8) as usize;
    put32(&mut b, off + 20 * 3 + 4, 1_000_000); // row 3 of chunk 1: sentence id
    reseal_section(&mut b, i);
    let r = open(b).unwrap();
    let err = block_on(r.row_meta_chunk(1)).unwrap_err();
    assert!(
        matches!(&err, BankError::Corrupt(msg) if msg.contains("row 259") && msg.contains("1000000")),
        "{err}"
    );
}

#[test]
fn requests_out_of_range_are_errors() {
    let r = open(valid()).unwrap();
    assert!(matches!(
        block_on(r.codes_chunk(3, 0)),
        Err(BankError::OutOfRange {
            what: "layer slot",
            ..
        })
    ));
    assert!(matches!(
        block_on(r.codes_chunk(0, r.n_chunks())),
        Err(BankError::OutOfRange {
            what: "row chunk",
            ..
        })
    ));
    assert!(matches!(
        block_on(r.quantizer_blob(99)),
        Err(BankError::OutOfRange { .. })
    ));
    assert!(matches!(
        block_on(r.sentence(300)),
        Err(BankError::OutOfRange {
            what: "sentence",
            ..
        })
    ));
    assert!(matches!(
        block_on(r.row_meta(r.n_rows())),
        Err(BankError::OutOfRange { what: "row", .. })
    ));
    assert!(r.chunk_rows(r.n_chunks()).is_err());
}

#[test]
fn writer_refuses_inconsistent_input() {
    let p = parts(16, 8);
    let try_write = |edit: &dyn Fn(&mut Parts)| {
        let mut q = parts(16, 8);
        edit(&mut q);
        write(&q)
    };
    assert!(write(&p).is_ok());
    let cases: Vec<(&str, PartsEdit)> = vec![
        (
            "codes of slot 1",
            Box::new(|q| {
                q.codes[1].pop();
            }),
        ),
        (
            "refinement data of slot 0",
            Box::new(|q| {
                q.refine[0].push(0);
            }),
        ),
        ("names sentence", Box::new(|q| q.rows[5].sentence_id = 300)),
        (
            "not a UTF-8 byte range",
            Box::new(|q| {
                // Inside the 4-byte crab of sentence 1.
                let s = &q.sentences[1];
                let at = s.find('🦀').unwrap() as u32;
                let r = q.rows.iter_mut().find(|m| m.sentence_id == 1).unwrap();
                r.span_start = at + 1;
                r.span_end = at + 4;
            }),
        ),
        (
            "row metadata given",
            Box::new(|q| {
                q.rows.pop();
            }),
        ),
        (
            "sentences given",
            Box::new(|q| {
                q.sentences.push("extra".into());
            }),
        ),
        (
            "quantizer blob of slot 2",
            Box::new(|q| q.quantizers[2].clear()),
        ),
        ("layer data given", Box::new(|q| q.manifest.layers.push(30))),
    ];
    for (needle, edit) in cases {
        match try_write(&*edit) {
            Err(BankError::InvalidInput(msg)) => assert!(msg.contains(needle), "{needle}: {msg}"),
            Err(e) => panic!("{needle}: unexpected error {e}"),
            Ok(_) => panic!("{needle}: inconsistent input was written"),
        }
    }
}

/// Deterministic damage at many positions (truncations, bit flips with and
/// without resealed checksums): every outcome must be Ok or a BankError.
#[test]
fn random_damage_never_panics() {
    let b = valid();
    let noise = bytes(7, 4000);
    for k in 0..600 {
        let r0 = u32::from_le_bytes([
            noise[k * 4 % 3996],
            noise[k * 4 % 3996 + 1],
            noise[k * 4 % 3996 + 2],
            noise[k * 4 % 3996 + 3],
        ]) as usize;
        let mut d = b.clone();
        // Mostly damage the header, manifest and table, sometimes the sections.
        let span = if k % 3 == 0 {
            d.len()
        } else {
            entry_at(&d, n_entries(&d))
        };
        let pos = r0 % span;
        d[pos] ^= 1 << (k % 8);
        if k % 2 == 0 {
            try_reseal(&mut d);
        }
        if k % 5 == 0 {
            d.truncate(pos.max(1));
        }
        if let Ok(r) = open(d) {
            let _ = read_all(&r);
        }
    }
}

/// Writes a few valid banks as fuzzing seeds into `$LATENTLENS_FUZZ_SEEDS`.
/// Not a test of behaviour; run on purpose (see fuzz/Cargo.toml).
#[test]
#[ignore]
fn write_fuzz_seeds() {
    let Ok(dir) = std::env::var("LATENTLENS_FUZZ_SEEDS") else {
        eprintln!("LATENTLENS_FUZZ_SEEDS not set: nothing written");
        return;
    };
    std::fs::create_dir_all(&dir).unwrap();
    let mut small = parts(4, 2);
    small.sentences.truncate(6);
    small.rows = rows_for(&small.sentences);
    small.manifest.rows = small.rows.len() as u64;
    small.manifest.sentences = 6;
    small.manifest.rows_per_chunk = 8;
    small.manifest.sentences_per_block = 2;
    small.manifest.layers.truncate(2);
    small.quantizers.truncate(2);
    let n = small.rows.len();
    small.codes = vec![bytes(1, n * 4), bytes(2, n * 4)];
    small.refine = vec![bytes(3, n * 2), bytes(4, n * 2)];
    std::fs::write(format!("{dir}/small.llbank"), write(&small).unwrap()).unwrap();
    small.manifest.quantizer.refine_bytes = 0;
    std::fs::write(
        format!("{dir}/small-norefine.llbank"),
        write(&small).unwrap(),
    )
    .unwrap();
    std::fs::write(format!("{dir}/medium.llbank"), write(&parts(8, 0)).unwrap()).unwrap();
}

/// Pins the byte layout of docs/bank-format.md, read by hand at the
/// documented offsets (not through the reader).
#[test]
fn file_bytes_match_the_documented_layout() {
    assert_eq!(
        crc32fast::hash(b"123456789"),
        0xCBF4_3926,
        "CRC-32 variant of the spec"
    );
    let p = parts(16, 8);
    let b = write(&p).unwrap();
    assert_eq!(&b[0..8], &[0x89, b'L', b'L', b'B', b'A', b'N', b'K', b'\n']);
    assert_eq!(u16::from_le_bytes([b[8], b[9]]), 1);
    assert_eq!(u16::from_le_bytes([b[10], b[11]]), 0);
    assert_eq!(le64(&b, 16), b.len() as u64);
    assert_eq!(le64(&b, 24), 64, "manifest follows the header");
    let m = manifest_range(&b);
    assert_eq!(le32(&b, 36), crc32fast::hash(&b[m.clone()]));
    let json: serde_json::Value = serde_json::from_slice(&b[m.clone()]).unwrap();
    assert_eq!(json["hidden_size"], 576);
    assert_eq!(json["quantizer"]["code_bytes"], 16);
    assert_eq!(table_offset(&b), m.end, "table follows the manifest");
    assert_eq!(le32(&b, 60), crc32fast::hash(&b[0..60]));
    let n_chunks = p.rows.len().div_ceil(256);
    assert_eq!(n_entries(&b), 3 * (1 + 2 * n_chunks) + n_chunks + 5);
    let mut prev_end = entry_at(&b, n_entries(&b)) as u64;
    for i in 0..n_entries(&b) {
        let e = entry_at(&b, i);
        let (off, len) = (le64(&b, e + 8), le64(&b, e + 16));
        assert_eq!(off % 8, 0, "entry {i} aligned");
        assert!(off >= prev_end, "entry {i} in file order");
        prev_end = off + len;
        assert_eq!(
            le32(&b, e + 24),
            crc32fast::hash(&b[off as usize..(off + len) as usize])
        );
    }
    assert_eq!(
        prev_end,
        b.len() as u64,
        "the file ends with the last section"
    );
    // File order: quantizers, then per chunk metadata, codes of each slot, refinement of each slot.
    let kinds: Vec<(u16, u16, u32)> = (0..3 + 7)
        .map(|i| {
            let e = entry_at(&b, i);
            (
                u16::from_le_bytes([b[e], b[e + 1]]),
                u16::from_le_bytes([b[e + 2], b[e + 3]]),
                le32(&b, e + 4),
            )
        })
        .collect();
    let want = [
        (1, 0, 0),
        (1, 1, 0),
        (1, 2, 0),
        (4, 0, 0),
        (2, 0, 0),
        (2, 1, 0),
        (2, 2, 0),
        (3, 0, 0),
        (3, 1, 0),
        (3, 2, 0),
    ];
    assert_eq!(kinds, want);
    // Row metadata record: five u32 (token, sentence, span start, span end, position).
    let e = entry_at(&b, find_entry(&b, 4, 0, 1));
    let off = le64(&b, e + 8) as usize + 20 * 7;
    let r = &p.rows[256 + 7];
    let rec: Vec<u32> = (0..5).map(|k| le32(&b, off + 4 * k)).collect();
    assert_eq!(
        rec,
        vec![
            r.token_id,
            r.sentence_id,
            r.span_start,
            r.span_end,
            r.position
        ]
    );
    // Codes of slot 2 chunk 1: rows 256.. of the codes, row-major.
    let e = entry_at(&b, find_entry(&b, 2, 2, 1));
    let off = le64(&b, e + 8) as usize;
    assert_eq!(&b[off..off + 256 * 16], &p.codes[2][256 * 16..512 * 16]);
    // Sentence block 1: raw deflate of (k+1) u32 offsets + concatenated UTF-8, length in aux.
    let e = entry_at(&b, find_entry(&b, 5, 0, 1));
    let (off, len, aux) = (
        le64(&b, e + 8) as usize,
        le64(&b, e + 16) as usize,
        le32(&b, e + 28) as usize,
    );
    let raw = miniz_oxide::inflate::decompress_to_vec(&b[off..off + len]).unwrap();
    assert_eq!(raw.len(), aux);
    let text: String = p.sentences[64..128].concat();
    assert_eq!(&raw[65 * 4..], text.as_bytes());
    assert_eq!(le32(&raw, 0), 0);
    assert_eq!(le32(&raw, 4), p.sentences[64].len() as u32);
    assert_eq!(le32(&raw, 64 * 4), text.len() as u32);
}
