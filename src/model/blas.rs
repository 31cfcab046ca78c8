//! Optional system BLAS for the CPU path's large f32 matrix multiplies
//! (native builds only).
//!
//! candle's CPU GEMM (the `gemm` crate) reaches about a third of what an
//! optimised BLAS does on this project's machines (≈ 67 vs ≈ 330 GFLOP/s on
//! 2 AVX-512 cores for `[512, 576] × [576, 1536]`), and prefill of whole
//! sentences — the bank builder's extraction — is matmul-bound. So when an
//! OpenBLAS shared library can be loaded at run time, the decoder's linear
//! layers call its `cblas_sgemm`; otherwise they stay on candle. Nothing is
//! linked at build time: a machine without OpenBLAS builds and runs the same
//! code, only slower.
//!
//! Which library: `$LATENTLENS_BLAS` (a path, or `off` to disable), else
//! `libopenblas.so.0` / `libopenblas.so` from the system (Debian:
//! `apt install libopenblas0-pthread`). Each call splits its rows over
//! candle's thread count (`RAYON_NUM_THREADS`, else all cores), one
//! single-threaded sgemm per block, so both paths use the same threads. Results equal candle's up to f32 summation order (tested in
//! `tests/blas.rs`).

use std::sync::OnceLock;

use candle_core::{DType, Device, Storage, Tensor};

use super::ModelError;

type SgemmFn = unsafe extern "C" fn(
    order: i32,
    trans_a: i32,
    trans_b: i32,
    m: i32,
    n: i32,
    k: i32,
    alpha: f32,
    a: *const f32,
    lda: i32,
    b: *const f32,
    ldb: i32,
    beta: f32,
    c: *mut f32,
    ldc: i32,
);
type SetThreadsFn = unsafe extern "C" fn(n: i32);

const CBLAS_ROW_MAJOR: i32 = 101;
const CBLAS_NO_TRANS: i32 = 111;
const CBLAS_TRANS: i32 = 112;

/// A loaded BLAS: the library (kept alive) and its `cblas_sgemm`.
struct Blas {
    _lib: libloading::Library,
    sgemm: SgemmFn,
    name: String,
}

static BLAS: OnceLock<Option<Blas>> = OnceLock::new();

fn load() -> Option<Blas> {
    let candidates: Vec<String> = match std::env::var("LATENTLENS_BLAS") {
        Ok(v) if v.eq_ignore_ascii_case("off") || v == "0" || v.is_empty() => return None,
        Ok(v) => vec![v],
        Err(_) => vec!["libopenblas.so.0".into(), "libopenblas.so".into(), "libopenblas.dylib".into()],
    };
    for name in candidates {
        // SAFETY: loading a shared library runs its initialisers; OpenBLAS's
        // are the documented way to use it. The symbol types match the CBLAS
        // and OpenBLAS C headers.
        let Ok(lib) = (unsafe { libloading::Library::new(&name) }) else { continue };
        let Ok(sgemm) = (unsafe { lib.get::<SgemmFn>(b"cblas_sgemm\0") }) else { continue };
        let sgemm = *sgemm;
        // One BLAS thread per call: we split rows across our own scoped
        // threads instead. OpenBLAS's pthread pool busy-waits between calls,
        // which collapses throughput when the cores are shared with another
        // process (measured: > 10x slower next to a second build).
        if let Ok(set) = unsafe { lib.get::<SetThreadsFn>(b"openblas_set_num_threads\0") } {
            // SAFETY: plain C call with an int argument.
            unsafe { (*set)(1) };
        }
        return Some(Blas { _lib: lib, sgemm, name });
    }
    None
}

fn blas() -> Option<&'static Blas> {
    BLAS.get_or_init(load).as_ref()
}

/// The BLAS library in use for the CPU path's matmuls, if any (for reports).
pub fn backend_name() -> Option<&'static str> {
    blas().map(|b| b.name.as_str())
}

/// Below this many multiply-adds candle's GEMM is as fast and avoids a copy.
const MIN_WORK: usize = 1 << 20;

/// `x Wᵀ` for `x: [.., k]` and a contiguous `w: [n, k]`, both f32 on the CPU,
/// through the system BLAS. `Ok(None)` when no BLAS is loaded or the inputs
/// do not qualify (then the caller uses candle).
pub fn matmul_nt(x: &Tensor, w: &Tensor) -> Result<Option<Tensor>, ModelError> {
    let Some(blas) = blas() else { return Ok(None) };
    if !matches!(x.device(), Device::Cpu) || x.dtype() != DType::F32 || w.dtype() != DType::F32 {
        return Ok(None);
    }
    let (n, k) = w.dims2()?;
    let dims = x.dims().to_vec();
    let Some((&k_x, lead)) = dims.split_last() else { return Ok(None) };
    if k_x != k || !w.is_contiguous() {
        return Ok(None);
    }
    let m: usize = lead.iter().product();
    if m.saturating_mul(n).saturating_mul(k) < MIN_WORK || [m, n, k].iter().any(|&v| v > i32::MAX as usize) {
        return Ok(None);
    }
    let x = x.contiguous()?;
    let mut out = vec![0f32; m * n];
    {
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (Storage::Cpu(xc), Storage::Cpu(wc)) = (&*xs, &*ws) else { return Ok(None) };
        let (Some(xv), Some(wv)) = (
            xc.as_slice::<f32>()?.get(xl.start_offset()..xl.start_offset() + m * k),
            wc.as_slice::<f32>()?.get(wl.start_offset()..wl.start_offset() + n * k),
        ) else {
            return Ok(None);
        };
        // Rows of x (and of the output) split across candle's thread count,
        // one single-threaded sgemm per block.
        let threads = candle_core::utils::get_num_threads().clamp(1, m.div_ceil(16).max(1));
        let rows_per = m.div_ceil(threads);
        let gemm = |xb: &[f32], ob: &mut [f32]| {
            let rows = ob.len() / n;
            // SAFETY: xb holds rows·k and ob rows·n f32, wv n·k, all row-major,
            // matching the dimensions and leading dimensions passed.
            unsafe {
                (blas.sgemm)(
                    CBLAS_ROW_MAJOR,
                    CBLAS_NO_TRANS,
                    CBLAS_TRANS,
                    rows as i32,
                    n as i32,
                    k as i32,
                    1.0,
                    xb.as_ptr(),
                    k as i32,
                    wv.as_ptr(),
                    k as i32,
                    0.0,
                    ob.as_mut_ptr(),
                    n as i32,
                )
            }
        };
        if threads <= 1 {
            gemm(xv, &mut out);
        } else {
            std::thread::scope(|sc| {
                for (xb, ob) in xv.chunks(rows_per * k).zip(out.chunks_mut(rows_per * n)) {
                    let gemm = &gemm;
                    sc.spawn(move || gemm(xb, ob));
                }
            });
        }
    }
    let mut shape = lead.to_vec();
    shape.push(n);
    Ok(Some(Tensor::from_vec(out, shape, &Device::Cpu)?))
}
