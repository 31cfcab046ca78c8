//! PQ search of one bank layer on the GPU (WGSL kernels of [`crate::gpu`]):
//! the quantizer's scanned codebooks and the codes are uploaded once; each
//! query batch is rotated on the CPU (OPQ), then LUT → scan → top-k run on
//! the GPU; refinement data, if any, reranks the GPU shortlist on the CPU.
//! Results are [`Hit`]s in the CONTRACT order, like [`super::pq_search`].

use super::{check_k, check_rows, rerank, Hit, SearchError};
use crate::bank::pq::{ProductQuantizer, KSUB};
use crate::gpu::{GpuContext, GpuSearch, PqCodebooks};

/// One bank layer resident on the GPU.
pub struct GpuPqLayer {
    pq: ProductQuantizer,
    gpu: GpuSearch,
    refine: Vec<u8>,
    slot: u16,
}

impl GpuPqLayer {
    /// Uploads the scanned codebooks of `pq` and the layer's `codes`
    /// (`[n, code_bytes]`); `refine` (`[n, refine_bytes]`) stays on the CPU.
    /// `slot` is the bank-layer slot written into every hit.
    pub fn new(ctx: &GpuContext, pq: &ProductQuantizer, codes: &[u8], refine: Option<&[u8]>, slot: u16) -> Result<Self, crate::Error> {
        let scan = &pq.stages()[..pq.scan_stages()];
        let dsub = scan.first().map(|s| s.dsub).ok_or_else(|| SearchError::Invalid("quantizer has no stage".into()))?;
        if scan.iter().any(|s| s.dsub != dsub) {
            return Err(SearchError::Invalid("scanned stages of different sub-space widths are not supported on the GPU".into()).into());
        }
        // Residual stages reuse the same sub-spaces: byte j of stage s reads
        // query dimensions [j·dsub, (j+1)·dsub).
        let mut centroids = Vec::new();
        let mut offsets = Vec::new();
        for s in scan {
            centroids.extend_from_slice(&s.centroids);
            offsets.extend((0..s.m).map(|j| (j * dsub) as u32));
        }
        let m = pq.code_bytes();
        let books = PqCodebooks { d: pq.d(), m, dsub, centroids: &centroids, offsets: Some(&offsets) };
        let mut gpu = GpuSearch::new(ctx, &books, u32::from(slot))?;
        if codes.len() % m != 0 {
            return Err(SearchError::Invalid(format!("{} code bytes is not [n, {m}]", codes.len())).into());
        }
        gpu.push_codes(codes, codes.len() / m)?;
        let refine = match refine {
            Some(r) if pq.refine_bytes() > 0 => r.to_vec(),
            _ => Vec::new(),
        };
        Ok(Self { pq: pq.clone(), gpu, refine, slot })
    }

    /// Top-`k` rows for each query of `queries` (`[nq, d]`, L2-normalised);
    /// with refinement data, the GPU returns `shortlist` candidates that are
    /// reranked on the CPU.
    pub async fn search(&self, queries: &[f32], k: usize, shortlist: usize) -> Result<Vec<Vec<Hit>>, crate::Error> {
        check_k(k)?;
        let nq = check_rows("queries", queries, self.pq.d())?;
        let rotated = self.pq.rotate(queries).map_err(SearchError::from)?;
        let keep = if self.refine.is_empty() { k } else { shortlist.max(k) };
        let lists = self.gpu.search(&rotated, nq, keep).await?;
        let hits: Vec<Vec<Hit>> = lists
            .into_iter()
            .map(|l| l.into_iter().map(|(row, score)| Hit { row, score, layer: self.slot }).collect())
            .collect();
        if self.refine.is_empty() {
            return Ok(hits);
        }
        let luts = self.pq.refine_lut(queries).map_err(SearchError::from)?;
        debug_assert_eq!(luts.len(), nq * self.pq.refine_bytes() * KSUB);
        Ok(rerank(&luts, self.pq.refine_bytes(), &self.refine, &hits, k)?)
    }
}
