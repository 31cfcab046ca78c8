//! [`BankReader`]: opens a bank over any [`ByteSource`] and serves its
//! sections, validating everything before use.
//!
//! `open` reads the first [`PREFIX_READ_LEN`] bytes (header, manifest and
//! section table of all but huge banks; otherwise one more read), then checks
//! magic, version, checksums, the manifest's fields, every section's bounds,
//! kind, slot, chunk and exact length against the manifest, and that no two
//! regions overlap. Every size is bounded (see [`limits`]) before it is read
//! or allocated; section contents are checksummed when read.

use std::cell::RefCell;
use std::ops::Range;
use std::rc::Rc;

use super::format::{
    limits, BankManifest, Header, Layout, RowMeta, SectionEntry, SectionKind, HEADER_LEN,
    PREFIX_READ_LEN, ROW_META_LEN, SECTION_ENTRY_LEN,
};
use super::sentences::SentenceBlock;
use super::BankError;
use crate::fetch::ByteSource;

/// Decompressed sentence blocks kept in memory (most recently used first).
pub(crate) const BLOCK_CACHE_LEN: usize = 16;
/// Decoded row-metadata chunks kept in memory for [`BankReader::row_meta`].
const META_CACHE_LEN: usize = 4;

/// Index of section entries by (kind, slot, chunk), filled from the table.
struct Sections {
    /// `[n_layers]`
    quantizer: Vec<SectionEntry>,
    /// `[n_layers, n_chunks]` row-major
    codes: Vec<SectionEntry>,
    /// `[n_layers, n_chunks]` row-major, empty without refinement
    refine: Vec<SectionEntry>,
    /// `[n_layers, n_chunks]` row-major, empty without exact rows (v1.1)
    exact: Vec<SectionEntry>,
    /// `[n_chunks]`
    meta: Vec<SectionEntry>,
    /// `[n_blocks]`
    blocks: Vec<SectionEntry>,
}

/// A validated, open bank. Not `Send` (it may hold a browser source); caches
/// decompressed sentence blocks and decoded row metadata.
pub struct BankReader {
    source: Box<dyn ByteSource>,
    header: Header,
    manifest: BankManifest,
    layout: Layout,
    table: Vec<SectionEntry>,
    sections: Sections,
    block_cache: RefCell<Vec<(u64, Rc<SentenceBlock>)>>,
    meta_cache: RefCell<Vec<(u64, Rc<Vec<RowMeta>>)>>,
}

fn layout_err(msg: impl Into<String>) -> BankError {
    BankError::Layout(msg.into())
}

/// `[offset, offset + len)` must lie within `total`; returns the end.
fn check_within(what: &str, offset: u64, len: u64, total: u64) -> Result<u64, BankError> {
    match offset.checked_add(len) {
        Some(end) if end <= total => Ok(end),
        _ => Err(BankError::Truncated {
            what: format!("{what} at offset {offset}"),
            expected: offset.saturating_add(len),
            actual: total,
        }),
    }
}

fn check_crc(what: impl FnOnce() -> String, bytes: &[u8], stored: u32) -> Result<(), BankError> {
    let actual = crc32fast::hash(bytes);
    if actual != stored {
        return Err(BankError::Checksum {
            what: what(),
            stored,
            actual,
        });
    }
    Ok(())
}

/// Bytes `[offset, offset + len)` from `prefix` if it holds them, else from `source`.
async fn region(
    source: &dyn ByteSource,
    prefix: &[u8],
    offset: u64,
    len: u64,
) -> Result<Vec<u8>, BankError> {
    if let Some(end) = offset.checked_add(len) {
        if end <= prefix.len() as u64 {
            return Ok(prefix[offset as usize..end as usize].to_vec());
        }
    }
    let len = usize::try_from(len)
        .map_err(|_| layout_err(format!("region of {len} bytes is too large")))?;
    Ok(source.read(offset, len).await?)
}

fn label(e: &SectionEntry) -> String {
    match e.kind {
        SectionKind::Quantizer => format!("quantizer section of layer slot {}", e.slot),
        SectionKind::Codes => format!("codes section of layer slot {} chunk {}", e.slot, e.chunk),
        SectionKind::Refine => format!(
            "refinement section of layer slot {} chunk {}",
            e.slot, e.chunk
        ),
        SectionKind::RowMeta => format!("row-metadata section of chunk {}", e.chunk),
        SectionKind::SentenceBlock => format!("sentence block {}", e.chunk),
        SectionKind::ExactRows => format!("exact rows of layer slot {} chunk {}", e.slot, e.chunk),
        SectionKind::Optional(k) => format!("optional section of kind {k:#06x}"),
    }
}

impl BankReader {
    /// Opens and validates a bank. Reads header, manifest and section table
    /// (one read for most banks, at most three), nothing else.
    ///
    /// When a checksum of the header region fails and the source holds a
    /// cache ([`ByteSource::evict`]), the cached copy is dropped and the bank
    /// opened once more from the origin.
    pub async fn open(source: Box<dyn ByteSource>) -> Result<Self, BankError> {
        match Self::open_once(source).await {
            Err((e @ BankError::Checksum { .. }, Some(source))) => {
                let total = source.total_len().await?;
                if source.evict(0, total).await? {
                    Self::open_once(source).await.map_err(|(e, _)| e)
                } else {
                    Err(e)
                }
            }
            r => r.map_err(|(e, _)| e),
        }
    }

    /// [`open`](Self::open) without the retry; hands the source back with a
    /// checksum error so the caller can evict and retry.
    async fn open_once(source: Box<dyn ByteSource>) -> Result<Self, (BankError, Option<Box<dyn ByteSource>>)> {
        match Self::validate(&*source).await {
            Ok((header, manifest, layout, table, sections)) => Ok(Self {
                source,
                header,
                manifest,
                layout,
                table,
                sections,
                block_cache: RefCell::new(Vec::new()),
                meta_cache: RefCell::new(Vec::new()),
            }),
            Err(e @ BankError::Checksum { .. }) => Err((e, Some(source))),
            Err(e) => Err((e, None)),
        }
    }

    #[allow(clippy::type_complexity)]
    async fn validate(
        source: &dyn ByteSource,
    ) -> Result<(Header, BankManifest, Layout, Vec<SectionEntry>, Sections), BankError> {
        let total = source.total_len().await?;
        if total < HEADER_LEN as u64 {
            return Err(BankError::Truncated {
                what: "header".into(),
                expected: HEADER_LEN as u64,
                actual: total,
            });
        }
        let prefix_len = total.min(PREFIX_READ_LEN) as usize;
        let prefix = source.read(0, prefix_len).await?;
        let header = Header::decode(&prefix)?;
        if header.file_len != total {
            return Err(if header.file_len > total {
                BankError::Truncated {
                    what: "file".into(),
                    expected: header.file_len,
                    actual: total,
                }
            } else {
                BankError::SizeMismatch {
                    recorded: header.file_len,
                    actual: total,
                }
            });
        }

        // Manifest and table regions: bounded, inside the file, after the header, disjoint.
        let m_off = header.manifest_offset;
        let m_len = u64::from(header.manifest_len);
        if m_len == 0 || m_len > limits::MAX_MANIFEST_LEN {
            return Err(BankError::Manifest(format!(
                "manifest length {m_len} is not in 1..={}",
                limits::MAX_MANIFEST_LEN
            )));
        }
        let m_end = check_within("manifest", m_off, m_len, total)?;
        let t_off = header.table_offset;
        let t_entries = u64::from(header.table_entries);
        if t_entries > limits::MAX_SECTIONS {
            return Err(layout_err(format!(
                "{t_entries} section table entries exceed the limit of {}",
                limits::MAX_SECTIONS
            )));
        }
        let t_len = t_entries * SECTION_ENTRY_LEN as u64;
        let t_end = check_within("section table", t_off, t_len, total)?;
        if m_off < HEADER_LEN as u64 || t_off < HEADER_LEN as u64 {
            return Err(layout_err("manifest or section table overlaps the header"));
        }
        if m_off < t_end && t_off < m_end {
            return Err(layout_err("manifest and section table overlap"));
        }

        // One read for both when they are adjacent and not in the prefix already.
        let (m_bytes, t_bytes) = if m_end <= prefix.len() as u64 && t_end <= prefix.len() as u64 {
            (
                region(source, &prefix, m_off, m_len).await?,
                region(source, &prefix, t_off, t_len).await?,
            )
        } else if m_end == t_off {
            let both = region(source, &prefix, m_off, m_len + t_len).await?;
            let (m, t) = both.split_at(m_len as usize);
            (m.to_vec(), t.to_vec())
        } else {
            (
                region(source, &prefix, m_off, m_len).await?,
                region(source, &prefix, t_off, t_len).await?,
            )
        };
        check_crc(|| "manifest".into(), &m_bytes, header.manifest_crc)?;
        check_crc(|| "section table".into(), &t_bytes, header.table_crc)?;
        let manifest = BankManifest::from_json(&m_bytes)?;
        let layout = manifest.layout();

        let expected = layout.expected_sections();
        if t_entries < expected {
            return Err(layout_err(format!(
                "the table has {t_entries} sections but the manifest ({} layers, {} row chunks{}, {} sentence blocks) \
                 implies {expected}",
                layout.n_layers,
                layout.n_chunks,
                if layout.has_refine { " with refinement" } else { "" },
                layout.n_blocks
            )));
        }
        let table: Vec<SectionEntry> = t_bytes
            .chunks_exact(SECTION_ENTRY_LEN)
            .enumerate()
            .map(|(i, b)| SectionEntry::decode(b, i))
            .collect::<Result<_, _>>()?;
        let sections = Self::index_sections(&manifest, &layout, &table, total)?;
        Self::check_overlaps(&header, &table)?;
        Ok((header, manifest, layout, table, sections))
    }

    /// Native convenience: opens and validates the bank file at `path`,
    /// blocking on the (synchronous) file reads.
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open_file(path: impl AsRef<std::path::Path>) -> Result<Self, BankError> {
        let source = crate::fetch::FileSource::open(path)?;
        futures::executor::block_on(Self::open(Box::new(source)))
    }

    /// Opens a bank at `url` over HTTP Range requests ([`crate::fetch::HttpSource`]:
    /// chunked, cached, resumable, with progress per `opts`).
    pub async fn open_url(url: &str, opts: crate::fetch::FetchOptions) -> Result<Self, BankError> {
        let source = crate::fetch::HttpSource::open(url, opts).await?;
        Self::open(Box::new(source)).await
    }

    /// Checks each entry's kind, slot, chunk, bounds and exact length against
    /// the manifest, and that each required section appears exactly once.
    fn index_sections(
        m: &BankManifest,
        layout: &Layout,
        table: &[SectionEntry],
        total: u64,
    ) -> Result<Sections, BankError> {
        // All counts below are bounded by limits::MAX_SECTIONS (manifest validation).
        let n_layers = layout.n_layers as usize;
        let n_chunks = layout.n_chunks as usize;
        let n_blocks = layout.n_blocks as usize;
        let mut quantizer: Vec<Option<SectionEntry>> = vec![None; n_layers];
        let mut codes: Vec<Option<SectionEntry>> = vec![None; n_layers * n_chunks];
        let mut refine: Vec<Option<SectionEntry>> = vec![
            None;
            if layout.has_refine {
                n_layers * n_chunks
            } else {
                0
            }
        ];
        let mut exact: Vec<Option<SectionEntry>> = vec![None; if layout.has_exact { n_layers * n_chunks } else { 0 }];
        let exact_len = super::format::exact_row_len(m.hidden_size as usize) as u64;
        let mut meta: Vec<Option<SectionEntry>> = vec![None; n_chunks];
        let mut blocks: Vec<Option<SectionEntry>> = vec![None; n_blocks];
        let q = &m.quantizer;

        for (i, e) in table.iter().enumerate() {
            let what = || format!("entry {i} ({})", label(e));
            check_within(&what(), e.offset, e.len, total)?;
            let slot = usize::from(e.slot);
            let chunk = e.chunk as usize;
            if e.kind.per_layer() && slot >= n_layers {
                return Err(layout_err(format!(
                    "{}: layer slot {slot} but the manifest has {n_layers} layers",
                    what()
                )));
            }
            if !e.kind.per_layer() && !matches!(e.kind, SectionKind::Optional(_)) && e.slot != 0 {
                return Err(layout_err(format!("{}: slot must be 0", what())));
            }
            let (target, expected_len): (&mut Option<SectionEntry>, Option<u64>) = match e.kind {
                SectionKind::Optional(_) => continue,
                SectionKind::Quantizer => {
                    if chunk != 0 {
                        return Err(layout_err(format!("{}: chunk must be 0", what())));
                    }
                    if e.len == 0 || e.len > limits::MAX_QUANTIZER_LEN {
                        return Err(layout_err(format!(
                            "{}: length {} is not in 1..={}",
                            what(),
                            e.len,
                            limits::MAX_QUANTIZER_LEN
                        )));
                    }
                    (&mut quantizer[slot], None)
                }
                SectionKind::ExactRows if !layout.has_exact => {
                    return Err(layout_err(format!("{}: exact rows present but the manifest has no `exact` field", what())));
                }
                SectionKind::Codes | SectionKind::Refine | SectionKind::RowMeta | SectionKind::ExactRows => {
                    if chunk >= n_chunks {
                        return Err(layout_err(format!(
                            "{}: chunk {chunk} but the manifest implies {n_chunks} chunks",
                            what()
                        )));
                    }
                    let rows = m.chunk_rows(chunk as u64);
                    let rows = rows.end - rows.start;
                    match e.kind {
                        SectionKind::Codes => (
                            &mut codes[slot * n_chunks + chunk],
                            Some(rows * u64::from(q.code_bytes)),
                        ),
                        SectionKind::Refine => {
                            if !layout.has_refine {
                                return Err(layout_err(format!(
                                    "{}: refinement data present but quantizer.refine_bytes is 0",
                                    what()
                                )));
                            }
                            (
                                &mut refine[slot * n_chunks + chunk],
                                Some(rows * u64::from(q.refine_bytes)),
                            )
                        }
                        SectionKind::ExactRows => (&mut exact[slot * n_chunks + chunk], Some(rows * exact_len)),
                        _ => (&mut meta[chunk], Some(rows * ROW_META_LEN as u64)),
                    }
                }
                SectionKind::SentenceBlock => {
                    if chunk >= n_blocks {
                        return Err(layout_err(format!(
                            "{}: block {chunk} but the manifest implies {n_blocks} sentence blocks",
                            what()
                        )));
                    }
                    let ids = m.block_sentences(chunk as u64);
                    let min_raw = (ids.end - ids.start + 1) * 4;
                    let raw = u64::from(e.aux);
                    if e.len == 0 || e.len > limits::MAX_BLOCK_LEN {
                        return Err(layout_err(format!(
                            "{}: length {} is not in 1..={}",
                            what(),
                            e.len,
                            limits::MAX_BLOCK_LEN
                        )));
                    }
                    if raw < min_raw || raw > limits::MAX_BLOCK_RAW_LEN {
                        return Err(layout_err(format!(
                            "{}: decompressed length {raw} is not in {min_raw}..={}",
                            what(),
                            limits::MAX_BLOCK_RAW_LEN
                        )));
                    }
                    (&mut blocks[chunk], None)
                }
            };
            if let Some(len) = expected_len {
                if e.len != len {
                    return Err(layout_err(format!(
                        "{}: {} bytes, but the manifest implies {len} (rows × bytes per row)",
                        what(),
                        e.len
                    )));
                }
            }
            if target.is_some() {
                return Err(layout_err(format!("{}: listed twice", what())));
            }
            *target = Some(*e);
        }

        fn complete(
            v: Vec<Option<SectionEntry>>,
            missing: impl Fn(usize) -> String,
        ) -> Result<Vec<SectionEntry>, BankError> {
            v.into_iter()
                .enumerate()
                .map(|(i, e)| e.ok_or_else(|| layout_err(format!("{} is missing", missing(i)))))
                .collect()
        }
        let nc = n_chunks.max(1);
        Ok(Sections {
            quantizer: complete(quantizer, |s| {
                format!("the quantizer section of layer slot {s}")
            })?,
            codes: complete(codes, |i| {
                format!(
                    "the codes section of layer slot {} chunk {}",
                    i / nc,
                    i % nc
                )
            })?,
            refine: complete(refine, |i| {
                format!(
                    "the refinement section of layer slot {} chunk {}",
                    i / nc,
                    i % nc
                )
            })?,
            exact: complete(exact, |i| format!("the exact-rows section of layer slot {} chunk {}", i / nc, i % nc))?,
            meta: complete(meta, |c| format!("the row-metadata section of chunk {c}"))?,
            blocks: complete(blocks, |b| format!("sentence block {b}"))?,
        })
    }

    /// No two of header, manifest, table and sections may share a byte.
    fn check_overlaps(h: &Header, table: &[SectionEntry]) -> Result<(), BankError> {
        // Ends were checked for overflow before.
        let mut regions: Vec<(u64, u64, String)> = Vec::with_capacity(table.len() + 3);
        regions.push((0, HEADER_LEN as u64, "the header".into()));
        regions.push((
            h.manifest_offset,
            h.manifest_offset + u64::from(h.manifest_len),
            "the manifest".into(),
        ));
        regions.push((
            h.table_offset,
            h.table_offset + u64::from(h.table_entries) * SECTION_ENTRY_LEN as u64,
            "the section table".into(),
        ));
        let mut order: Vec<(u64, u64, usize)> = table
            .iter()
            .enumerate()
            .filter(|(_, e)| e.len > 0)
            .map(|(i, e)| (e.offset, e.offset + e.len, i))
            .collect();
        order.extend(
            regions
                .iter()
                .enumerate()
                .map(|(i, r)| (r.0, r.1, usize::MAX - i)),
        );
        order.sort_unstable();
        let name = |i: usize| -> String {
            if i >= usize::MAX - 2 {
                regions[usize::MAX - i].2.clone()
            } else {
                format!("entry {i} ({})", label(&table[i]))
            }
        };
        for w in order.windows(2) {
            let (a, b) = (w[0], w[1]);
            if b.0 < a.1 {
                return Err(layout_err(format!("{} overlaps {}", name(a.2), name(b.2))));
            }
        }
        Ok(())
    }

    /// The validated manifest.
    pub fn manifest(&self) -> &BankManifest {
        &self.manifest
    }

    /// The fixed header (format version, offsets).
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// All section-table entries in file order of the table.
    pub fn sections(&self) -> &[SectionEntry] {
        &self.table
    }

    /// Name of the underlying source (path or URL).
    pub fn source_name(&self) -> &str {
        self.source.name()
    }

    /// Number of bank-layer slots.
    pub fn n_layers(&self) -> usize {
        self.layout.n_layers as usize
    }

    /// Number of rows (same in every layer).
    pub fn n_rows(&self) -> u64 {
        self.manifest.rows
    }

    /// Number of row chunks.
    pub fn n_chunks(&self) -> u64 {
        self.layout.n_chunks
    }

    /// Number of sentence blocks.
    pub fn n_sentence_blocks(&self) -> u64 {
        self.layout.n_blocks
    }

    /// Number of sentences.
    pub fn n_sentences(&self) -> u64 {
        self.manifest.sentences
    }

    /// Code bytes per row (M).
    pub fn code_bytes(&self) -> usize {
        self.manifest.quantizer.code_bytes as usize
    }

    /// Refinement bytes per row (0 if none).
    pub fn refine_bytes(&self) -> usize {
        self.manifest.quantizer.refine_bytes as usize
    }

    /// Rows `[start, end)` covered by `chunk`.
    pub fn chunk_rows(&self, chunk: u64) -> Result<Range<u64>, BankError> {
        self.check_chunk(chunk)?;
        Ok(self.manifest.chunk_rows(chunk))
    }

    fn check_slot(&self, slot: usize) -> Result<(), BankError> {
        if slot >= self.n_layers() {
            return Err(BankError::OutOfRange {
                what: "layer slot",
                index: slot as u64,
                count: self.n_layers() as u64,
            });
        }
        Ok(())
    }

    fn check_chunk(&self, chunk: u64) -> Result<(), BankError> {
        if chunk >= self.layout.n_chunks {
            return Err(BankError::OutOfRange {
                what: "row chunk",
                index: chunk,
                count: self.layout.n_chunks,
            });
        }
        Ok(())
    }

    /// Reads a section and verifies its checksum. Its length was bounded at open.
    /// A checksum failure over a caching source ([`ByteSource::evict`])
    /// drops the cached bytes and reads once more from the origin, so a
    /// damaged cache entry costs a re-download, not a failure.
    pub async fn read_section(&self, e: &SectionEntry) -> Result<Vec<u8>, BankError> {
        let len =
            usize::try_from(e.len).map_err(|_| layout_err(format!("{} is too large", label(e))))?;
        let bytes = self.source.read(e.offset, len).await?;
        match check_crc(|| label(e), &bytes, e.crc) {
            Ok(()) => Ok(bytes),
            Err(err) => {
                if !self.source.evict(e.offset, e.len).await? {
                    return Err(err);
                }
                let bytes = self.source.read(e.offset, len).await?;
                check_crc(|| label(e), &bytes, e.crc)?;
                Ok(bytes)
            }
        }
    }

    /// The quantizer blob of layer slot `slot` (opaque bytes; decode with the quantizer).
    pub async fn quantizer_blob(&self, slot: usize) -> Result<Vec<u8>, BankError> {
        self.check_slot(slot)?;
        self.read_section(&self.sections.quantizer[slot]).await
    }

    /// Codes of layer slot `slot`, row chunk `chunk`: `[rows_in_chunk, code_bytes]` u8, row-major.
    pub async fn codes_chunk(&self, slot: usize, chunk: u64) -> Result<Vec<u8>, BankError> {
        self.check_slot(slot)?;
        self.check_chunk(chunk)?;
        let e = self.sections.codes[slot * self.layout.n_chunks as usize + chunk as usize];
        self.read_section(&e).await
    }

    /// Whether the bank stores exact rows (v1.1) for reranking.
    pub fn has_exact_rows(&self) -> bool {
        self.layout.has_exact
    }

    /// The exact (f16, L2-normalised when built by [`crate::bank::assemble`])
    /// vector of row `row` in layer slot `slot`: one small read of its
    /// record, checked against the record's own CRC-32 (a damaged cached
    /// copy is dropped and read once more from the origin).
    pub async fn exact_row(&self, slot: usize, row: u64) -> Result<Vec<f32>, BankError> {
        if !self.layout.has_exact {
            return Err(BankError::Invalid(
                "this bank stores no exact rows (built without --exact-rows): rerank is not available".into(),
            ));
        }
        self.check_slot(slot)?;
        if row >= self.manifest.rows {
            return Err(BankError::OutOfRange { what: "row", index: row, count: self.manifest.rows });
        }
        let rpc = u64::from(self.manifest.rows_per_chunk.max(1));
        let chunk = row / rpc;
        let e = self.sections.exact[slot * self.layout.n_chunks as usize + chunk as usize];
        let d = self.manifest.hidden_size as usize;
        let rec = super::format::exact_row_len(d);
        let offset = e.offset + (row - chunk * rpc) * rec as u64;
        let bytes = self.source.read_small(offset, rec).await?;
        if let Some(v) = super::format::decode_exact_row(&bytes, d) {
            return Ok(v);
        }
        let corrupt = || BankError::Corrupt(format!("exact row {row} of layer slot {slot}: checksum mismatch (damaged file or cache)"));
        if !self.source.evict(offset, rec as u64).await? {
            return Err(corrupt());
        }
        let bytes = self.source.read_small(offset, rec).await?;
        super::format::decode_exact_row(&bytes, d).ok_or_else(corrupt)
    }

    /// Refinement data of layer slot `slot`, row chunk `chunk`: `[rows_in_chunk, refine_bytes]` u8.
    pub async fn refine_chunk(&self, slot: usize, chunk: u64) -> Result<Vec<u8>, BankError> {
        if !self.layout.has_refine {
            return Err(BankError::NoRefinement);
        }
        self.check_slot(slot)?;
        self.check_chunk(chunk)?;
        let e = self.sections.refine[slot * self.layout.n_chunks as usize + chunk as usize];
        self.read_section(&e).await
    }

    /// Row metadata of row chunk `chunk` (`[rows_in_chunk]`), validated:
    /// sentence ids in range, spans not reversed.
    pub async fn row_meta_chunk(&self, chunk: u64) -> Result<Vec<RowMeta>, BankError> {
        self.check_chunk(chunk)?;
        let bytes = self
            .read_section(&self.sections.meta[chunk as usize])
            .await?;
        let first_row = self.manifest.chunk_rows(chunk).start;
        bytes
            .chunks_exact(ROW_META_LEN)
            .enumerate()
            .map(|(i, b)| {
                let r = RowMeta::decode(b);
                let row = first_row + i as u64;
                if u64::from(r.sentence_id) >= self.manifest.sentences {
                    return Err(BankError::Corrupt(format!(
                        "row {row} names sentence {} but the bank has {}",
                        r.sentence_id, self.manifest.sentences
                    )));
                }
                if r.span_start > r.span_end {
                    return Err(BankError::Corrupt(format!(
                        "row {row} has a reversed character span {}..{}",
                        r.span_start, r.span_end
                    )));
                }
                Ok(r)
            })
            .collect()
    }

    /// Metadata of one row (reads and caches its whole chunk).
    pub async fn row_meta(&self, row: u64) -> Result<RowMeta, BankError> {
        if row >= self.manifest.rows {
            return Err(BankError::OutOfRange {
                what: "row",
                index: row,
                count: self.manifest.rows,
            });
        }
        let chunk = row / u64::from(self.manifest.rows_per_chunk);
        let i = (row % u64::from(self.manifest.rows_per_chunk)) as usize;
        let cached = lookup(&self.meta_cache, chunk);
        let metas = match cached {
            Some(m) => m,
            None => {
                let m = Rc::new(self.row_meta_chunk(chunk).await?);
                insert(&self.meta_cache, chunk, m.clone(), META_CACHE_LEN);
                m
            }
        };
        metas.get(i).copied().ok_or(BankError::OutOfRange {
            what: "row",
            index: row,
            count: self.manifest.rows,
        })
    }

    /// Decompressed sentence block `block` (cached).
    pub async fn sentence_block(&self, block: u64) -> Result<Rc<SentenceBlock>, BankError> {
        if block >= self.layout.n_blocks {
            return Err(BankError::OutOfRange {
                what: "sentence block",
                index: block,
                count: self.layout.n_blocks,
            });
        }
        if let Some(b) = lookup(&self.block_cache, block) {
            return Ok(b);
        }
        let e = self.sections.blocks[block as usize];
        let compressed = self.read_section(&e).await?;
        let ids = self.manifest.block_sentences(block);
        let b = Rc::new(SentenceBlock::decompress(
            &compressed,
            u64::from(e.aux),
            (ids.end - ids.start) as usize,
            block,
        )?);
        insert(&self.block_cache, block, b.clone(), BLOCK_CACHE_LEN);
        Ok(b)
    }

    /// Sentence `id` (one range read of its block unless cached).
    pub async fn sentence(&self, id: u32) -> Result<String, BankError> {
        if u64::from(id) >= self.manifest.sentences {
            return Err(BankError::OutOfRange {
                what: "sentence",
                index: u64::from(id),
                count: self.manifest.sentences,
            });
        }
        let spb = u64::from(self.manifest.sentences_per_block);
        let block = u64::from(id) / spb;
        let b = self.sentence_block(block).await?;
        b.get((u64::from(id) % spb) as usize)
            .map(str::to_string)
            .ok_or_else(|| {
                BankError::Corrupt(format!("sentence block {block} lacks sentence {id}"))
            })
    }
}

/// Most-recently-used lookup in a small cache (borrow released before returning).
fn lookup<T>(cache: &RefCell<Vec<(u64, Rc<T>)>>, key: u64) -> Option<Rc<T>> {
    let mut c = cache.borrow_mut();
    let pos = c.iter().position(|(k, _)| *k == key)?;
    let entry = c.remove(pos);
    let v = entry.1.clone();
    c.insert(0, entry);
    Some(v)
}

fn insert<T>(cache: &RefCell<Vec<(u64, Rc<T>)>>, key: u64, value: Rc<T>, cap: usize) {
    let mut c = cache.borrow_mut();
    c.retain(|(k, _)| *k != key);
    c.insert(0, (key, value));
    c.truncate(cap);
}
