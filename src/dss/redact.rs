//! Removing the API key from text DSS sends back: error bodies (`error.rs`) and job logs
//! (`log_tail.rs`). Both the key and its HTTP Basic credentials (`base64("key:")`, what a proxy or a
//! server echoing the request would show) are replaced by `***`, wherever they occur. [`Redactor`]
//! works on a stream of text, so a key split across two chunks of a body is still found.

use std::cmp::Reverse;

use base64::Engine as _;

/// What replaces a secret.
pub(crate) const REDACTED: &str = "***";

/// The texts to remove for the API key `secret`: the key and its Basic credentials. None for an empty
/// key.
pub(crate) fn secret_forms(secret: &str) -> Vec<String> {
    if secret.is_empty() {
        return Vec::new();
    }
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{secret}:"));
    vec![secret.to_owned(), basic]
}

/// Replaces every occurrence of the API key `secret`, and of its Basic credentials, in `text` by
/// `***`: a server or proxy echoing the request must not make the key visible.
pub(crate) fn redact(text: &str, secret: &str) -> String {
    let mut redactor = Redactor::new(secret);
    let mut out = String::with_capacity(text.len());
    redactor.push(text, &mut out);
    redactor.finish(&mut out);
    out
}

/// Redacts a text that arrives in pieces. It holds back the last `longest secret - 1` bytes of what
/// it was given, since a secret may start there and end in the next piece.
#[derive(Debug)]
pub(crate) struct Redactor {
    /// Longest first, so that at one position the longer secret wins.
    secrets: Vec<String>,
    hold_back: usize,
    pending: String,
}

impl Redactor {
    /// A redactor for the API key `secret` (a no-op for an empty key).
    pub(crate) fn new(secret: &str) -> Self {
        let mut secrets = secret_forms(secret);
        secrets.sort_by_key(|s| Reverse(s.len()));
        let hold_back = secrets.first().map_or(0, |s| s.len().saturating_sub(1));
        Self {
            secrets,
            hold_back,
            pending: String::new(),
        }
    }

    /// Appends the redacted form of `text` to `out`, except what must be held back.
    pub(crate) fn push(&mut self, text: &str, out: &mut String) {
        if self.secrets.is_empty() {
            out.push_str(text);
            return;
        }
        self.pending.push_str(text);
        let pos = self.replace_complete(out);
        // Whatever a secret may still start in stays pending; the rest goes out now.
        let mut safe = self.pending.len().saturating_sub(self.hold_back).max(pos);
        while !self.pending.is_char_boundary(safe) {
            safe -= 1;
        }
        out.push_str(&self.pending[pos..safe]);
        self.pending.drain(..safe);
    }

    /// Appends what was held back (the text ended).
    pub(crate) fn finish(&mut self, out: &mut String) {
        let pos = self.replace_complete(out);
        out.push_str(&self.pending[pos..]);
        self.pending.clear();
    }

    /// Writes `pending` up to the end of its last complete secret, with secrets replaced; returns
    /// where it stopped. Each secret is searched again only when its next match was passed, so the
    /// work stays linear in the text.
    fn replace_complete(&self, out: &mut String) -> usize {
        let text = self.pending.as_str();
        let mut next: Vec<Option<usize>> = self.secrets.iter().map(|s| text.find(s.as_str())).collect();
        let mut pos = 0;
        loop {
            let earliest = next
                .iter()
                .enumerate()
                .filter_map(|(k, at)| at.map(|at| (at, k)))
                .min();
            let Some((at, k)) = earliest else { break };
            out.push_str(&text[pos..at]);
            out.push_str(REDACTED);
            pos = at + self.secrets[k].len();
            for (k, at) in next.iter_mut().enumerate() {
                if at.is_some_and(|at| at < pos) {
                    *at = text[pos..].find(self.secrets[k].as_str()).map(|i| pos + i);
                }
            }
        }
        pos
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &str = "k3y-Zq8vN3";

    fn basic() -> String {
        base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"))
    }

    /// Redacts `text` fed in pieces of `piece` characters.
    fn streamed(text: &str, piece: usize) -> String {
        let mut redactor = Redactor::new(KEY);
        let mut out = String::new();
        let chars: Vec<char> = text.chars().collect();
        for part in chars.chunks(piece.max(1)) {
            redactor.push(&part.iter().collect::<String>(), &mut out);
        }
        redactor.finish(&mut out);
        out
    }

    #[test]
    fn the_key_and_its_basic_form_are_replaced_wherever_they_are() {
        let b = basic();
        let cases = [
            ("alone", KEY.to_owned(), "***".to_owned()),
            ("inside a word", format!("x{KEY}y"), "x***y".to_owned()),
            ("twice in a row", format!("{KEY}{KEY}"), "******".to_owned()),
            (
                "basic header echo",
                format!("Authorization: Basic {b}"),
                "Authorization: Basic ***".to_owned(),
            ),
            ("both", format!("{KEY} / {b}."), "*** / ***.".to_owned()),
            (
                "a prefix of the key only",
                "k3y-Zq8".to_owned(),
                "k3y-Zq8".to_owned(),
            ),
            ("non-ASCII around", format!("é{KEY}日本"), "é***日本".to_owned()),
        ];
        for (case, text, expected) in cases {
            assert_eq!(redact(&text, KEY), expected, "{case}");
            for piece in [1, 2, 3, 5, 100] {
                assert_eq!(streamed(&text, piece), expected, "{case}, pieces of {piece}");
            }
        }
        assert_eq!(redact("nothing to hide", ""), "nothing to hide");
    }

    #[test]
    fn only_a_possible_secret_start_is_held_back() {
        let mut redactor = Redactor::new(KEY);
        let mut out = String::new();
        redactor.push("a long line without the key, ending in k3y", &mut out);
        assert_eq!(
            out.len(),
            "a long line without the key, ending in k3y".len() - (basic().len() - 1)
        );
        redactor.push("-Zq8vN3 and more", &mut out);
        redactor.finish(&mut out);
        assert_eq!(out, "a long line without the key, ending in *** and more");
    }

    proptest! {
        #[test]
        fn streaming_never_shows_a_secret_whatever_the_split(
            parts in prop::collection::vec(prop_oneof![
                Just(KEY.to_owned()),
                Just(basic()),
                Just("k3y-".to_owned()),
                "[a-zé0-9 :=\\n-]{0,12}",
            ], 0..12),
            piece in 1usize..20,
        ) {
            let text: String = parts.concat();
            let out = streamed(&text, piece);
            prop_assert!(!out.contains(KEY), "{out}");
            prop_assert!(!out.contains(&basic()), "{out}");
            prop_assert_eq!(out, redact(&text, KEY));
        }
    }
}
