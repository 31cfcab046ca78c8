//! WordNet 3.0 (the Debian `wordnet-base` database files) for the automatic
//! judge: lemmatisation by WordNet's *morphy* rules (exception lists, then
//! suffix detachment checked against the index), noun synonyms and direct
//! hypernyms.
//!
//! Files read: `index.{noun,verb,adj,adv}`, `{noun,verb,adj,adv}.exc`,
//! `data.noun`. Format: WordNet's `wndb(5WN)` manual page. Morphy rules:
//! `morphy(7WN)` (the same table as NLTK's `WordNetCorpusReader.MORPHOLOGICAL_SUBSTITUTIONS`).

use std::collections::{BTreeSet, HashMap, HashSet};

use super::EvalError;

/// Parts of speech in file-name form.
const POS: [&str; 4] = ["noun", "verb", "adj", "adv"];

/// Suffix substitutions of morphy, per part of speech.
const SUBSTITUTIONS: [(&str, &[(&str, &str)]); 3] = [
    (
        "noun",
        &[("s", ""), ("ses", "s"), ("ves", "f"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"), ("ies", "y")],
    ),
    ("verb", &[("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")]),
    ("adj", &[("er", ""), ("est", ""), ("er", "e"), ("est", "e")]),
];

/// Noun synsets used per word: the most frequent senses only (index order).
pub const NOUN_SENSES: usize = 2;

/// The loaded database (the parts the judge needs).
#[derive(Debug, Clone, Default)]
pub struct WordNet {
    /// Lemmas per part of speech (lower case, `_` for spaces).
    index: HashMap<&'static str, HashSet<String>>,
    /// Noun lemma → synset offsets in sense order.
    noun_offsets: HashMap<String, Vec<u64>>,
    /// Exceptions per part of speech: inflected form → base forms.
    exceptions: HashMap<&'static str, HashMap<String, Vec<String>>>,
    /// `data.noun` text (looked up by byte offset).
    data_noun: String,
}

impl WordNet {
    /// Builds from file contents: `read(name)` returns the text of a
    /// database file such as `index.noun`, or `None` when missing.
    pub fn from_files(mut read: impl FnMut(&str) -> Option<String>) -> Result<Self, EvalError> {
        let mut wn = WordNet::default();
        for pos in POS {
            let idx = read(&format!("index.{pos}")).ok_or_else(|| {
                EvalError::Assets(format!("WordNet index.{pos} missing: install Debian wordnet-base (./build.sh setup)"))
            })?;
            let mut set = HashSet::new();
            for line in idx.lines().filter(|l| !l.starts_with(' ')) {
                let f: Vec<&str> = line.split(' ').collect();
                let Some(lemma) = f.first() else { continue };
                set.insert(lemma.to_string());
                if pos == "noun" {
                    // lemma pos synset_cnt p_cnt [ptr...] sense_cnt tagsense_cnt offsets...
                    let p_cnt: usize = f.get(3).and_then(|s| s.parse().ok()).unwrap_or(0);
                    let start = 4 + p_cnt + 2;
                    let offs: Vec<u64> = f.iter().skip(start).filter_map(|s| s.parse().ok()).collect();
                    wn.noun_offsets.insert(lemma.to_string(), offs);
                }
            }
            wn.index.insert(pos, set);
            let mut exc = HashMap::new();
            if let Some(text) = read(&format!("{pos}.exc")) {
                for line in text.lines() {
                    let mut it = line.split_whitespace();
                    if let Some(form) = it.next() {
                        exc.insert(form.to_string(), it.map(String::from).collect());
                    }
                }
            }
            wn.exceptions.insert(pos, exc);
        }
        wn.data_noun = read("data.noun")
            .ok_or_else(|| EvalError::Assets("WordNet data.noun missing: install Debian wordnet-base".into()))?;
        if wn.noun_offsets.is_empty() {
            return Err(EvalError::Assets("WordNet index.noun has no entries: not a WordNet database".into()));
        }
        Ok(wn)
    }

    /// Loads from a directory (`/usr/share/wordnet` on Debian).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn open(dir: &std::path::Path) -> Result<Self, EvalError> {
        Self::from_files(|name| std::fs::read_to_string(dir.join(name)).ok())
    }

    fn in_index(&self, pos: &str, w: &str) -> bool {
        self.index.get(pos).is_some_and(|s| s.contains(w))
    }

    /// Base forms of `word` by morphy over all parts of speech, lower-cased;
    /// the word itself is always included (so unknown words still match
    /// themselves).
    pub fn lemmas(&self, word: &str) -> BTreeSet<String> {
        let w = word.trim().to_lowercase().replace(' ', "_");
        let mut out = BTreeSet::new();
        out.insert(w.clone());
        for pos in POS {
            if let Some(bases) = self.exceptions.get(pos).and_then(|e| e.get(&w)) {
                out.extend(bases.iter().cloned());
            }
        }
        for (pos, subs) in SUBSTITUTIONS {
            for (suffix, repl) in subs {
                if let Some(stem) = w.strip_suffix(suffix) {
                    let cand = format!("{stem}{repl}");
                    if !stem.is_empty() && self.in_index(pos, &cand) {
                        out.insert(cand);
                    }
                }
            }
        }
        out
    }

    /// The synset line of `data.noun` at byte `offset`.
    fn noun_synset(&self, offset: u64) -> Option<&str> {
        let start = usize::try_from(offset).ok()?;
        let rest = self.data_noun.get(start..)?;
        Some(rest.split('\n').next().unwrap_or(rest))
    }

    /// Lemma names and hypernym offsets of a `data.noun` line.
    fn parse_synset(line: &str) -> (Vec<String>, Vec<u64>) {
        let head = line.split(" | ").next().unwrap_or(line);
        let f: Vec<&str> = head.split(' ').collect();
        let mut words = Vec::new();
        let mut hypers = Vec::new();
        let Some(w_cnt) = f.get(3).and_then(|s| usize::from_str_radix(s, 16).ok()) else { return (words, hypers) };
        for i in 0..w_cnt {
            if let Some(w) = f.get(4 + 2 * i) {
                // Adjective markers like "(p)" do not occur in nouns; strip anyway.
                let w = w.split('(').next().unwrap_or(w);
                words.push(w.to_lowercase());
            }
        }
        let p = 4 + 2 * w_cnt;
        let p_cnt: usize = f.get(p).and_then(|s| s.parse().ok()).unwrap_or(0);
        for j in 0..p_cnt {
            let b = p + 1 + 4 * j;
            if let (Some(sym), Some(off), Some(pos)) = (f.get(b), f.get(b + 1), f.get(b + 2)) {
                if (*sym == "@" || *sym == "@i") && *pos == "n" {
                    if let Ok(o) = off.parse() {
                        hypers.push(o);
                    }
                }
            }
        }
        (words, hypers)
    }

    /// Single-word synonyms (lemma names of the first [`NOUN_SENSES`] noun
    /// senses) and direct hypernyms' single-word lemma names of `noun`.
    pub fn noun_related(&self, noun: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let key = noun.to_lowercase().replace(' ', "_");
        let Some(offs) = self.noun_offsets.get(&key) else { return out };
        for &o in offs.iter().take(NOUN_SENSES) {
            let Some(line) = self.noun_synset(o) else { continue };
            let (words, hypers) = Self::parse_synset(line);
            out.extend(words.into_iter().filter(|w| !w.contains('_')));
            for h in hypers {
                if let Some(hl) = self.noun_synset(h) {
                    out.extend(Self::parse_synset(hl).0.into_iter().filter(|w| !w.contains('_')));
                }
            }
        }
        out
    }
}
