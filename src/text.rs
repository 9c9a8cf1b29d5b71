//! The one way the crate shortens text it shows (condition messages, event notes, DSS error texts):
//! to a number of bytes, as Kubernetes bounds its fields, on a character boundary, the cut marked.

/// Shortens `text` to at most `max` bytes on a character boundary, ending with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    const MARK: &str = "…";
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries_and_the_byte_bound() {
        assert_eq!(truncate("abc", 10), "abc");
        assert_eq!(truncate("abcdefghij", 6), "abc…");
        for max in 0..12 {
            let t = truncate("ééééé", max);
            assert!(t.len() <= max.max(3), "{max}: {t}");
        }
        assert_eq!(truncate("ééééé", 7), "éé…");
    }
}
