//! Download progress reported by [`super::HttpSource`] and [`super::fetch_all`].

use std::rc::Rc;

/// One progress report of a download (a bank read in ranges, or a whole file).
///
/// `loaded` counts *distinct* bytes of the file obtained so far, from the
/// network or the cache, so `loaded / total` is the fraction of the file that
/// is local; reading the same range twice does not count twice.
#[derive(Debug, Clone, PartialEq)]
pub struct Progress {
    /// The URL being read.
    pub url: String,
    /// Distinct bytes of the file obtained so far (network + cache).
    pub loaded: u64,
    /// Total length of the file in bytes.
    pub total: u64,
    /// Network throughput so far: network bytes / seconds spent in network
    /// requests (0 until something came from the network).
    pub bytes_per_s: f64,
    /// How many of the `loaded` bytes came from the cache.
    pub from_cache: u64,
}

impl Progress {
    /// `loaded / total` in `[0, 1]` (1 for an empty file).
    pub fn fraction(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            (self.loaded as f64 / self.total as f64).min(1.0)
        }
    }
}

/// A progress callback; called after every chunk obtained (from the network
/// or the cache). Not `Send`: in the browser it runs on the thread that reads.
pub type ProgressFn = Rc<dyn Fn(&Progress)>;
