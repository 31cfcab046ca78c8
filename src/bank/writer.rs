//! [`BankWriter`]: writes a bank file from in-memory parts, deterministically
//! (the same inputs give the same bytes).
//!
//! File order: header, manifest, section table, then (8-byte aligned) the
//! quantizer blobs of every layer slot, then per row chunk `c`: row metadata
//! `c`, codes `c` of every slot, refinement `c` of every slot; then the
//! sentence blocks. A reader streaming the file from the start thus gets
//! chunk 0 of every layer first. Everything is checked before a byte is written.

use std::io::Write;

use super::format::{
    limits, BankManifest, Header, RowMeta, SectionEntry, SectionKind, FORMAT_MAJOR, FORMAT_MINOR,
    HEADER_LEN, ROW_META_LEN, SECTION_ALIGN, SECTION_ENTRY_LEN,
};
use super::sentences::{compress, encode_block};
use super::BankError;

/// The data of one bank-layer slot, borrowed from the caller.
#[derive(Debug, Clone, Copy)]
pub struct LayerData<'a> {
    /// The quantizer's serialised parameters (opaque to the bank).
    pub quantizer: &'a [u8],
    /// Codes `[rows, code_bytes]` u8, row-major.
    pub codes: &'a [u8],
    /// Refinement data `[rows, refine_bytes]` u8, row-major; `Some` iff
    /// `manifest.quantizer.refine_bytes > 0`.
    pub refine: Option<&'a [u8]>,
}

/// A bank ready to be written: validated parts, compressed sentence blocks.
#[derive(Debug)]
pub struct BankWriter<'a> {
    manifest: BankManifest,
    manifest_json: Vec<u8>,
    layers: Vec<LayerData<'a>>,
    /// `[rows × 20]` encoded row metadata.
    meta: Vec<u8>,
    /// Compressed sentence blocks and their decompressed lengths.
    blocks: Vec<(Vec<u8>, u32)>,
    /// Per layer slot, `[rows × exact_row_len(d)]` exact-row records (v1.1); empty: none.
    exact: Vec<&'a [u8]>,
}

fn input_err(msg: impl Into<String>) -> BankError {
    BankError::InvalidInput(msg.into())
}

/// A section to write: its table entry (offset filled in later) and bytes.
struct Planned<'b> {
    entry: SectionEntry,
    bytes: &'b [u8],
}

impl<'a> BankWriter<'a> {
    /// Checks every part against the manifest (counts, lengths, sentence ids,
    /// spans at UTF-8 boundaries of their sentence) and compresses the sentences.
    ///
    /// `layers[s]` is the data of bank-layer slot `s` (LLM layer `manifest.layers[s]`);
    /// `rows[r]` the metadata of row `r`; `sentences[i]` sentence id `i`.
    pub fn new(
        manifest: BankManifest,
        layers: Vec<LayerData<'a>>,
        rows: &[RowMeta],
        sentences: &[impl AsRef<str>],
    ) -> Result<Self, BankError> {
        manifest.validate()?;
        let q = &manifest.quantizer;
        if layers.len() != manifest.layers.len() {
            return Err(input_err(format!(
                "{} layer data given for {} bank layers",
                layers.len(),
                manifest.layers.len()
            )));
        }
        if rows.len() as u64 != manifest.rows {
            return Err(input_err(format!(
                "{} row metadata given, manifest.rows is {}",
                rows.len(),
                manifest.rows
            )));
        }
        if sentences.len() as u64 != manifest.sentences {
            return Err(input_err(format!(
                "{} sentences given, manifest.sentences is {}",
                sentences.len(),
                manifest.sentences
            )));
        }
        let n = manifest.rows;
        for (s, l) in layers.iter().enumerate() {
            if l.quantizer.is_empty() || l.quantizer.len() as u64 > limits::MAX_QUANTIZER_LEN {
                return Err(input_err(format!(
                    "quantizer blob of slot {s} is {} bytes, not in 1..={}",
                    l.quantizer.len(),
                    limits::MAX_QUANTIZER_LEN
                )));
            }
            let want = n * u64::from(q.code_bytes);
            if l.codes.len() as u64 != want {
                return Err(input_err(format!(
                    "codes of slot {s} are {} bytes, expected rows {n} × code_bytes {} = {want}",
                    l.codes.len(),
                    q.code_bytes
                )));
            }
            match (l.refine, q.refine_bytes) {
                (None, 0) => {}
                (Some(r), rb) if rb > 0 => {
                    let want = n * u64::from(rb);
                    if r.len() as u64 != want {
                        return Err(input_err(format!(
                            "refinement data of slot {s} is {} bytes, expected rows {n} × refine_bytes {rb} = {want}",
                            r.len()
                        )));
                    }
                }
                (Some(_), _) => {
                    return Err(input_err(format!(
                        "slot {s} has refinement data but quantizer.refine_bytes is 0"
                    )))
                }
                (None, rb) => {
                    return Err(input_err(format!(
                        "slot {s} lacks refinement data but quantizer.refine_bytes is {rb}"
                    )))
                }
            }
        }
        let mut meta = Vec::with_capacity(rows.len() * ROW_META_LEN);
        for (r, m) in rows.iter().enumerate() {
            let sentence = sentences.get(m.sentence_id as usize).ok_or_else(|| {
                input_err(format!(
                    "row {r} names sentence {} but there are {}",
                    m.sentence_id,
                    sentences.len()
                ))
            })?;
            if m.span_in(sentence.as_ref()).is_none() {
                return Err(input_err(format!(
                    "row {r}: span {}..{} is not a UTF-8 byte range of sentence {} ({} bytes)",
                    m.span_start,
                    m.span_end,
                    m.sentence_id,
                    sentence.as_ref().len()
                )));
            }
            meta.extend_from_slice(&m.encode());
        }
        let spb = manifest.sentences_per_block as usize;
        let mut blocks = Vec::new();
        for (b, group) in sentences.chunks(spb).enumerate() {
            let raw = encode_block(group, b as u64)?;
            let compressed = compress(&raw);
            if compressed.len() as u64 > limits::MAX_BLOCK_LEN {
                return Err(input_err(format!(
                    "sentence block {b} compresses to more than {}",
                    limits::MAX_BLOCK_LEN
                )));
            }
            // encode_block bounds raw.len() by MAX_BLOCK_RAW_LEN < u32::MAX.
            blocks.push((compressed, raw.len() as u32));
        }
        let manifest_json = manifest.to_json()?;
        if manifest_json.len() as u64 > limits::MAX_MANIFEST_LEN {
            return Err(input_err(format!(
                "manifest JSON is {} bytes, over the {}-byte limit",
                manifest_json.len(),
                limits::MAX_MANIFEST_LEN
            )));
        }
        Ok(Self {
            manifest,
            manifest_json,
            layers,
            meta,
            blocks,
            exact: Vec::new(),
        })
    }

    /// Adds exact rows (v1.1): `per_layer[s]` holds slot `s`'s rows as
    /// [`encode_exact_row`](super::format::encode_exact_row) records,
    /// `[rows × exact_row_len(d)]`. Sets the manifest's `exact` field.
    pub fn with_exact_rows(mut self, per_layer: Vec<&'a [u8]>) -> Result<Self, BankError> {
        if per_layer.len() != self.layers.len() {
            return Err(input_err(format!(
                "exact rows given for {} layers, the bank has {}",
                per_layer.len(),
                self.layers.len()
            )));
        }
        let rec = super::format::exact_row_len(self.manifest.hidden_size as usize) as u64;
        for (s, x) in per_layer.iter().enumerate() {
            let want = self.manifest.rows * rec;
            if x.len() as u64 != want {
                return Err(input_err(format!(
                    "exact rows of slot {s} are {} bytes, expected rows {} × {rec} = {want}",
                    x.len(),
                    self.manifest.rows
                )));
            }
        }
        self.manifest.exact = Some(super::format::ExactInfo { dtype: "f16".into() });
        self.manifest.validate()?;
        self.manifest_json = self.manifest.to_json()?;
        if self.manifest_json.len() as u64 > limits::MAX_MANIFEST_LEN {
            return Err(input_err("manifest JSON is over the size limit"));
        }
        self.exact = per_layer;
        Ok(self)
    }

    /// The manifest that will be written.
    pub fn manifest(&self) -> &BankManifest {
        &self.manifest
    }

    /// Sections in file order, offsets not yet assigned.
    fn plan(&self) -> Vec<Planned<'_>> {
        let m = &self.manifest;
        let q = &m.quantizer;
        let layout = m.layout();
        let mut out = Vec::new();
        let entry = |kind, slot: usize, chunk: u64, bytes: &[u8], aux: u32| SectionEntry {
            kind,
            slot: slot as u16,
            chunk: chunk as u32,
            offset: 0,
            len: bytes.len() as u64,
            crc: crc32fast::hash(bytes),
            aux,
        };
        for (s, l) in self.layers.iter().enumerate() {
            out.push(Planned {
                entry: entry(SectionKind::Quantizer, s, 0, l.quantizer, 0),
                bytes: l.quantizer,
            });
        }
        for c in 0..layout.n_chunks {
            let rows = m.chunk_rows(c);
            let (a, b) = (rows.start as usize, rows.end as usize);
            let meta = &self.meta[a * ROW_META_LEN..b * ROW_META_LEN];
            out.push(Planned {
                entry: entry(SectionKind::RowMeta, 0, c, meta, 0),
                bytes: meta,
            });
            let cb = q.code_bytes as usize;
            for (s, l) in self.layers.iter().enumerate() {
                let codes = &l.codes[a * cb..b * cb];
                out.push(Planned {
                    entry: entry(SectionKind::Codes, s, c, codes, 0),
                    bytes: codes,
                });
            }
            let rb = q.refine_bytes as usize;
            for (s, l) in self.layers.iter().enumerate() {
                if let Some(r) = l.refine {
                    let r = &r[a * rb..b * rb];
                    out.push(Planned {
                        entry: entry(SectionKind::Refine, s, c, r, 0),
                        bytes: r,
                    });
                }
            }
            let xb = super::format::exact_row_len(m.hidden_size as usize);
            for (s, x) in self.exact.iter().enumerate() {
                let x = &x[a * xb..b * xb];
                out.push(Planned { entry: entry(SectionKind::ExactRows, s, c, x, 0), bytes: x });
            }
        }
        for (b, (compressed, raw_len)) in self.blocks.iter().enumerate() {
            out.push(Planned {
                entry: entry(
                    SectionKind::SentenceBlock,
                    0,
                    b as u64,
                    compressed,
                    *raw_len,
                ),
                bytes: compressed,
            });
        }
        out
    }

    /// Writes the bank to `w`; returns the number of bytes written.
    pub fn write_to<W: Write>(&self, w: &mut W) -> Result<u64, BankError> {
        let mut plan = self.plan();
        let manifest_offset = HEADER_LEN as u64;
        let table_offset = manifest_offset + self.manifest_json.len() as u64;
        let table_len = (plan.len() * SECTION_ENTRY_LEN) as u64;
        let align = |x: u64| x.div_ceil(SECTION_ALIGN) * SECTION_ALIGN;
        let mut pos = align(table_offset + table_len);
        let data_start = pos;
        for p in plan.iter_mut() {
            p.entry.offset = pos;
            pos = align(pos + p.entry.len);
        }
        // The file ends right after the last section, without padding.
        let file_len = plan
            .last()
            .map_or(data_start, |p| p.entry.offset + p.entry.len);
        let mut table = Vec::with_capacity(table_len as usize);
        for p in &plan {
            table.extend_from_slice(&p.entry.encode());
        }
        let header = Header {
            major: FORMAT_MAJOR,
            minor: if self.exact.is_empty() { FORMAT_MINOR } else { super::format::FORMAT_MINOR_EXACT },
            file_len,
            manifest_offset,
            manifest_len: self.manifest_json.len() as u32,
            manifest_crc: crc32fast::hash(&self.manifest_json),
            table_offset,
            table_entries: plan.len() as u32,
            table_crc: crc32fast::hash(&table),
        };
        w.write_all(&header.encode())?;
        w.write_all(&self.manifest_json)?;
        w.write_all(&table)?;
        let mut written = table_offset + table_len;
        let zeros = [0u8; SECTION_ALIGN as usize];
        for p in &plan {
            w.write_all(&zeros[..(p.entry.offset - written) as usize])?;
            w.write_all(p.bytes)?;
            written = p.entry.offset + p.entry.len;
        }
        w.flush()?;
        Ok(written)
    }

    /// Writes the bank into a new byte vector.
    pub fn to_vec(&self) -> Result<Vec<u8>, BankError> {
        let mut v = Vec::new();
        self.write_to(&mut v)?;
        Ok(v)
    }
}
