//! The automatic judge: does a lens's word name what a patch shows?
//!
//! A patch's accepted words are, for each object covering it, the caption
//! noun's base forms, its WordNet synonyms and direct hypernyms
//! ([`WordNet::noun_related`]), plus the background colour name(s) seen in
//! the patch. A candidate word is lower-cased, trimmed of non-letters and
//! lemmatised ([`WordNet::lemmas`]); it matches when one of its base forms is
//! accepted. This replaces the paper's LLM judge where the ground truth is
//! known.

use std::collections::BTreeSet;

use super::scenes::PatchTruth;
use super::wordnet::WordNet;

/// Colour synonyms accepted for a background colour name.
fn colour_forms(c: &str) -> &'static [&'static str] {
    match c {
        "gray" => &["gray", "grey"],
        "purple" => &["purple", "violet"],
        _ => &[],
    }
}

/// Judge over a WordNet database.
pub struct Judge<'a> {
    wn: &'a WordNet,
}

impl<'a> Judge<'a> {
    /// A judge using `wn`.
    pub fn new(wn: &'a WordNet) -> Self {
        Self { wn }
    }

    /// Words accepted for an object noun (base forms, synonyms, direct hypernyms).
    pub fn object_words(&self, noun: &str) -> BTreeSet<String> {
        let mut out = self.wn.lemmas(noun);
        for w in self.wn.noun_related(noun) {
            out.extend(self.wn.lemmas(&w));
        }
        out
    }

    /// Every word accepted for `patch`.
    pub fn accepted(&self, patch: &PatchTruth) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for n in &patch.objects {
            out.extend(self.object_words(n));
        }
        for c in &patch.background {
            out.insert(c.to_lowercase());
            out.extend(colour_forms(c).iter().map(|s| s.to_string()));
        }
        out
    }

    /// The accepted base form `word` matches, if any.
    pub fn matches(&self, word: &str, accepted: &BTreeSet<String>) -> Option<String> {
        let w: String = word.trim().trim_matches(|c: char| !c.is_alphabetic()).to_lowercase();
        if w.is_empty() {
            return None;
        }
        self.wn.lemmas(&w).into_iter().find(|l| accepted.contains(l))
    }
}
