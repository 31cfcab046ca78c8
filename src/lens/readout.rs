//! Readout: turn what a search or an unembedding returns into what a person
//! reads — whole words inside their sentence (LatentLens) and cleanly decoded
//! token strings (EmbeddingLens, LogitLens).
//!
//! Byte-level BPE vocabularies (GPT-2, Llama-3, SmolLM2, Qwen2) store bytes as
//! printable code points (`Ġ` = space, `Ċ` = newline); [`decode_byte_level`]
//! inverts that mapping (GPT-2's `bytes_to_unicode`).

use serde::{Deserialize, Serialize};

/// A word found in its sentence, with its byte span (UTF-8) in that sentence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WordInSentence {
    /// The whole word, e.g. `"butterfly"` for the token `"fly"`.
    pub word: String,
    /// Byte span `[start, end)` of `word` in the sentence.
    pub span: (usize, usize),
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Expands the token at byte span `[start, end)` of `sentence` to the whole
/// word around it: leading/trailing whitespace and punctuation of the token
/// are dropped, then the span grows over adjacent letters and digits (and
/// apostrophes or hyphens between them, as in `don't`, `well-known`).
///
/// Returns `None` when the span is out of range, not on character
/// boundaries, or covers no word character (punctuation-only tokens).
pub fn whole_word(sentence: &str, start: usize, end: usize) -> Option<WordInSentence> {
    if start > end || end > sentence.len() || !sentence.is_char_boundary(start) || !sentence.is_char_boundary(end) {
        return None;
    }
    // Shrink to the word characters inside the token.
    let inner = &sentence[start..end];
    let first = inner.char_indices().find(|&(_, c)| is_word_char(c))?.0;
    let last = inner.char_indices().rev().find(|&(_, c)| is_word_char(c))?;
    let (mut s, mut e) = (start + first, start + last.0 + last.1.len_utf8());
    // Grow left.
    loop {
        let before = &sentence[..s];
        let mut it = before.chars().rev();
        match (it.next(), it.next()) {
            (Some(c), _) if is_word_char(c) => s -= c.len_utf8(),
            (Some(j), Some(c)) if (j == '\'' || j == '-') && is_word_char(c) => s -= j.len_utf8(),
            _ => break,
        }
    }
    // Grow right.
    loop {
        let after = &sentence[e..];
        let mut it = after.chars();
        match (it.next(), it.next()) {
            (Some(c), _) if is_word_char(c) => e += c.len_utf8(),
            (Some(j), Some(c)) if (j == '\'' || j == '-') && is_word_char(c) => e += j.len_utf8(),
            _ => break,
        }
    }
    Some(WordInSentence { word: sentence[s..e].to_string(), span: (s, e) })
}

/// The sentence split around a span, for highlighting as plain text
/// (never HTML): `(before, matched, after)`.
pub fn split_at_span(sentence: &str, span: (usize, usize)) -> Option<(&str, &str, &str)> {
    let (s, e) = span;
    if s > e || e > sentence.len() || !sentence.is_char_boundary(s) || !sentence.is_char_boundary(e) {
        return None;
    }
    Some((&sentence[..s], &sentence[s..e], &sentence[e..]))
}

/// GPT-2's `bytes_to_unicode` inverted: printable code point → byte.
fn unicode_to_byte(c: char) -> Option<u8> {
    let cp = c as u32;
    // Bytes that map to themselves: '!'..='~', '¡'..='¬', '®'..='ÿ'.
    if (0x21..=0x7e).contains(&cp) || (0xa1..=0xac).contains(&cp) || (0xae..=0xff).contains(&cp) {
        return Some(cp as u8);
    }
    // The others (0..=0x20, 0x7f..=0xa0, 0xad) map to 256.. in increasing byte order.
    let n = cp.checked_sub(256)?;
    let mut k = 0u32;
    for b in 0u32..=255 {
        let direct = (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        if !direct {
            if k == n {
                return Some(b as u8);
            }
            k += 1;
        }
    }
    None
}

/// Decodes a byte-level BPE token string (`"Ġcat"` → `" cat"`). Characters
/// outside the byte alphabet are kept as they are; bytes that do not form
/// valid UTF-8 on their own (half of a multi-byte character) become U+FFFD.
pub fn decode_byte_level(token: &str) -> String {
    let mut bytes = Vec::with_capacity(token.len());
    for c in token.chars() {
        match unicode_to_byte(c) {
            Some(b) => bytes.push(b),
            None => {
                let mut buf = [0u8; 4];
                bytes.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// A token string as shown in the baselines' columns: byte-level decoded,
/// SentencePiece's `▁` turned into a space, then trimmed. Empty results (a
/// whitespace token) are shown as a visible escape such as `\n` or `␠`.
pub fn display_token(token: &str) -> String {
    let decoded = decode_byte_level(token).replace('\u{2581}', " ");
    let trimmed = decoded.trim();
    if !trimmed.is_empty() {
        return trimmed.to_string();
    }
    decoded
        .chars()
        .map(|c| match c {
            '\n' => "\\n".to_string(),
            '\t' => "\\t".to_string(),
            ' ' => "\u{2420}".to_string(),
            c => c.escape_default().to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subword_expands_to_the_whole_word() {
        let s = "a butterfly landed on the well-known flower";
        let fly = s.find("fly").unwrap();
        let w = whole_word(s, fly, fly + 3).unwrap();
        assert_eq!(w.word, "butterfly");
        assert_eq!(&s[w.span.0..w.span.1], "butterfly");
        let known = s.find("known").unwrap();
        assert_eq!(whole_word(s, known, known + 5).unwrap().word, "well-known");
    }

    #[test]
    fn leading_space_of_a_token_is_not_part_of_the_word() {
        let s = "the cat sat";
        let w = whole_word(s, 3, 7).unwrap(); // " cat"
        assert_eq!(w.word, "cat");
        assert_eq!(w.span, (4, 7));
    }

    #[test]
    fn punctuation_only_and_bad_spans_give_none() {
        let s = "stop. now";
        assert_eq!(whole_word(s, 4, 5), None);
        assert_eq!(whole_word(s, 3, 99), None);
        assert_eq!(whole_word(s, 5, 3), None);
        assert_eq!(whole_word("héllo", 2, 3), None); // inside 'é'
    }

    #[test]
    fn unicode_words_expand() {
        let s = "un café crème";
        let i = s.find("caf").unwrap();
        assert_eq!(whole_word(s, i, i + 3).unwrap().word, "café");
    }

    #[test]
    fn byte_level_tokens_decode() {
        assert_eq!(decode_byte_level("Ġcat"), " cat");
        assert_eq!(decode_byte_level("Ċ"), "\n");
        assert_eq!(decode_byte_level("ĠcafÃ©"), " café");
        assert_eq!(display_token("Ġcat"), "cat");
        assert_eq!(display_token("Ċ"), "\\n");
        assert_eq!(display_token("▁hello"), "hello");
    }

    #[test]
    fn split_at_span_marks_the_word() {
        let (a, b, c) = split_at_span("a red fox", (2, 5)).unwrap();
        assert_eq!((a, b, c), ("a ", "red", " fox"));
        assert!(split_at_span("abc", (2, 9)).is_none());
    }
}
