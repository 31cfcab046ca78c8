// topk_common.wgsl — shared by the top-k kernels (pq_scan, exact_topk, exact_topk_f16, topk_merge).
// The host prepends this file to each kernel source (see `Kernel::source` in src/gpu/mod.rs).
//
// A workgroup of 256 invocations keeps a sort buffer of SORT_N = 1024 candidates in workgroup
// memory (struct of arrays: score, row, tag; 12 KiB). Slots [0, k) hold the best k so far (best
// first), and slot k - 1 is the admission threshold. Each step every invocation offers up to
// STEP_PER_INVOCATION candidates (`topk_offer`); only those better than the threshold are
// appended (atomic counter) after slot k. When the free room could not take another step, the
// buffer is sorted with a bitonic network (`topk_flush_if_full`) and the threshold rises, so on
// typical data almost no candidate is appended after the first few steps (the threshold idea of
// faiss' GPU k-selection).
//
// Order (CONTRACT): higher score first; equal score -> lower row first; equal score and row ->
// lower tag (bank-layer slot) first. NaN scores are mapped to -inf by `sanitize`; empty slots are
// (-inf, 0xffffffff, 0xffffffff) and the host drops every -inf candidate.

const WG: u32 = 256u;
const SORT_N: u32 = 1024u;
const EMPTY: u32 = 0xffffffffu;

struct Candidate {
    score: f32,
    row: u32,
    tag: u32,
}

var<workgroup> sk_score: array<f32, 1024>;
var<workgroup> sk_row: array<u32, 1024>;
var<workgroup> sk_tag: array<u32, 1024>;
var<workgroup> wg_count: atomic<u32>;
var<workgroup> wg_count_plain: u32;
var<workgroup> wg_thr_score: f32;
var<workgroup> wg_thr_row: u32;
var<workgroup> wg_thr_tag: u32;

// candidates offered per invocation per step; one step = STEP rows
const STEP_PER_INVOCATION: u32 = 2u;
const STEP: u32 = 512u;

fn neg_inf() -> f32 {
    // Through a variable: Tint (Chromium's WebGPU) rejects `bitcast<f32>(0xff800000u)` as a constant
    // expression ("value -inf cannot be represented as 'f32'"); a runtime value is allowed.
    var bits = 0xff800000u;
    return bitcast<f32>(bits);
}

// NaN -> -inf, by bit pattern (compilers may assume no NaN in float comparisons).
fn sanitize(s: f32) -> f32 {
    let bits = bitcast<u32>(s) & 0x7fffffffu;
    if (bits > 0x7f800000u) {
        return neg_inf();
    }
    return s;
}

// true when slot a must come before slot b
fn slot_better(a: u32, b: u32) -> bool {
    let sa = sk_score[a];
    let sb = sk_score[b];
    if (sa != sb) {
        return sa > sb;
    }
    let ra = sk_row[a];
    let rb = sk_row[b];
    if (ra != rb) {
        return ra < rb;
    }
    return sk_tag[a] < sk_tag[b];
}

fn slot_put(i: u32, score: f32, row: u32, tag: u32) {
    sk_score[i] = score;
    sk_row[i] = row;
    sk_tag[i] = tag;
}

fn slot_swap(a: u32, b: u32) {
    let s = sk_score[a];
    let r = sk_row[a];
    let t = sk_tag[a];
    sk_score[a] = sk_score[b];
    sk_row[a] = sk_row[b];
    sk_tag[a] = sk_tag[b];
    sk_score[b] = s;
    sk_row[b] = r;
    sk_tag[b] = t;
}

// Fill every slot with the empty candidate. Call from all invocations, then barrier.
fn slots_clear(lid: u32) {
    for (var i = lid; i < SORT_N; i += WG) {
        slot_put(i, neg_inf(), EMPTY, EMPTY);
    }
}

// Bitonic sort of the whole buffer, best first. Must be called by all 256 invocations
// in uniform control flow; ends with a barrier.
fn slots_sort(lid: u32) {
    workgroupBarrier();
    for (var size = 2u; size <= SORT_N; size = size << 1u) {
        for (var stride = size >> 1u; stride > 0u; stride = stride >> 1u) {
            for (var p = lid; p < SORT_N / 2u; p += WG) {
                let i = 2u * stride * (p / stride) + (p % stride);
                let j = i + stride;
                // within a block of `size`, the lower half of blocks sort best-first
                let best_first = (i & size) == 0u;
                if (slot_better(j, i) == best_first) {
                    slot_swap(i, j);
                }
            }
            workgroupBarrier();
        }
    }
}

// Start a top-k: empty buffer, permissive threshold. All invocations, uniform control flow.
fn topk_init(lid: u32) {
    slots_clear(lid);
    if (lid == 0u) {
        atomicStore(&wg_count, 0u);
        wg_thr_score = neg_inf();
        wg_thr_row = EMPTY;
        wg_thr_tag = EMPTY;
    }
    workgroupBarrier();
}

// Offer one candidate (any invocation, at most STEP_PER_INVOCATION per step). NaN and -inf
// scores never enter; others enter when better than the current threshold.
fn topk_offer(k: u32, score: f32, row: u32, tag: u32) {
    let s = sanitize(score);
    if (!(s > neg_inf())) {
        return;
    }
    let ts = wg_thr_score;
    var better = s > ts;
    if (s == ts) {
        better = row < wg_thr_row || (row == wg_thr_row && tag < wg_thr_tag);
    }
    if (better) {
        let i = atomicAdd(&wg_count, 1u);
        slot_put(k + i, s, row, tag);
    }
}

// Pending candidates after a step (uniform). Starts with a barrier.
fn topk_pending(lid: u32) -> u32 {
    workgroupBarrier();
    if (lid == 0u) {
        wg_count_plain = atomicLoad(&wg_count);
    }
    return workgroupUniformLoad(&wg_count_plain);
}

// Sort the `n` pending candidates in; slots [0, k) = best k; raise the threshold.
fn topk_merge_pending(lid: u32, k: u32, n: u32) {
    for (var i = k + n + lid; i < SORT_N; i += WG) {
        slot_put(i, neg_inf(), EMPTY, EMPTY);
    }
    slots_sort(lid);
    if (lid == 0u) {
        atomicStore(&wg_count, 0u);
        wg_thr_score = sk_score[k - 1u];
        wg_thr_row = sk_row[k - 1u];
        wg_thr_tag = sk_tag[k - 1u];
    }
    workgroupBarrier();
}

// After each step: sort when another step might not fit. All invocations, uniform control flow.
fn topk_flush_if_full(lid: u32, k: u32) {
    let n = topk_pending(lid);
    if (n + STEP > SORT_N - k) {
        topk_merge_pending(lid, k, n);
    }
}

// At the end: sort whatever is pending. All invocations, uniform control flow.
fn topk_flush(lid: u32, k: u32) {
    let n = topk_pending(lid);
    if (n > 0u) {
        topk_merge_pending(lid, k, n);
    }
}
