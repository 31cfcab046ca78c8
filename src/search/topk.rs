//! The hit type, the one ordering every top-k uses, and a bounded top-k
//! accumulator (binary heap with the worst kept hit at the root).

use std::cmp::Ordering;
use std::collections::BinaryHeap;

/// One neighbour: bank row, cosine score (or its PQ estimate), bank layer slot.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hit {
    /// Row index in the bank layer.
    pub row: u32,
    /// Score (inner product of L2-normalised vectors).
    pub score: f32,
    /// Bank-layer slot the row belongs to.
    pub layer: u16,
}

/// `Less` when `a` ranks before `b`: higher score, then lower row, then
/// lower layer slot (CONTRACT.md). Scores are compared with `total_cmp`;
/// NaN is kept out of every top-k before it reaches this.
#[inline]
pub fn hit_order(a: &Hit, b: &Hit) -> Ordering {
    b.score.total_cmp(&a.score).then(a.row.cmp(&b.row)).then(a.layer.cmp(&b.layer))
}

#[derive(Clone, Copy, Debug)]
struct Worst(Hit);

impl PartialEq for Worst {
    fn eq(&self, o: &Self) -> bool {
        hit_order(&self.0, &o.0) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Worst {
    // Max-heap root = the hit ranking last.
    fn cmp(&self, o: &Self) -> Ordering {
        hit_order(&self.0, &o.0)
    }
}

/// Bounded top-k of [`Hit`]s under [`hit_order`].
#[derive(Clone, Debug)]
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
    /// Score of the worst kept hit once full (else -inf): a cheap pre-filter.
    threshold: f32,
}

impl TopK {
    /// An empty top-`k` (k ≥ 1; callers validate `k`).
    pub fn new(k: usize) -> Self {
        Self { k: k.max(1), heap: BinaryHeap::with_capacity(k.max(1).min(1 << 16) + 1), threshold: f32::NEG_INFINITY }
    }

    /// Capacity.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Scores strictly below this can never enter.
    #[inline]
    pub fn threshold(&self) -> f32 {
        self.threshold
    }

    /// Offer a hit; NaN scores are ignored.
    #[inline]
    pub fn push(&mut self, h: Hit) {
        if h.score.is_nan() || h.score < self.threshold {
            return;
        }
        if self.heap.len() < self.k {
            self.heap.push(Worst(h));
        } else if let Some(mut top) = self.heap.peek_mut() {
            if hit_order(&h, &top.0) == Ordering::Less {
                *top = Worst(h);
            } else {
                return;
            }
        }
        if self.heap.len() == self.k {
            if let Some(w) = self.heap.peek() {
                self.threshold = w.0.score;
            }
        }
    }

    /// Number of kept hits.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// True when nothing was kept.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// Kept hits, best first.
    pub fn into_sorted(self) -> Vec<Hit> {
        let mut v: Vec<Hit> = self.heap.into_iter().map(|w| w.0).collect();
        v.sort_by(hit_order);
        v
    }

    /// Kept hits, best first, without consuming.
    pub fn sorted(&self) -> Vec<Hit> {
        self.clone().into_sorted()
    }
}
