//! The one way the crate shortens text it shows (condition messages, event notes, DSS error texts):
//! to a number of bytes, as Kubernetes bounds its fields, on a character boundary, the cut marked.

/// The most bytes of an Event's note (events.k8s.io refuses a longer one).
pub(crate) const NOTE_MAX: usize = 1024;

const MARK: &str = "…";

/// Shortens `text` to at most `max` bytes on a character boundary, ending with `…` when cut.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max.saturating_sub(MARK.len());
    while end > 0 && !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}{MARK}", &text[..end])
}

/// Shortens `text` to at most `max` bytes by dropping its front, starting with `…` when cut: for
/// logs, whose end (the final error) is what matters.
pub(crate) fn truncate_front(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut start = text.len() - max.saturating_sub(MARK.len());
    while start < text.len() && !text.is_char_boundary(start) {
        start += 1;
    }
    format!("{MARK}{}", &text[start..])
}

/// `message`, a newline and the end of `log`, within `max` bytes: the message first (its head, when
/// it must give the log room), then as much of the log's end as fits, cut from the front.
pub(crate) fn message_and_log_end(message: &str, log: &str, max: usize) -> String {
    if message.len() + 1 + log.len() <= max {
        return format!("{message}\n{log}");
    }
    // The message keeps at most half, so the log's end always shows; the log takes what is left.
    let message = truncate(message, message.len().min(max / 2));
    let room = max.saturating_sub(message.len() + 1);
    if room <= MARK.len() {
        return message;
    }
    format!("{message}\n{}", truncate_front(log, room))
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

    #[test]
    fn truncation_from_the_front_keeps_the_end() {
        assert_eq!(truncate_front("abc", 10), "abc");
        assert_eq!(truncate_front("abcdefghij", 6), "…hij");
        for max in 0..12 {
            let t = truncate_front("ééééé", max);
            assert!(t.len() <= max.max(3), "{max}: {t}");
            assert!(t.ends_with('é') || t == "…", "{max}: {t}");
        }
        assert_eq!(truncate_front("ééééé", 7), "…éé");
    }

    #[test]
    fn a_message_comes_first_and_the_log_keeps_its_end() {
        assert_eq!(message_and_log_end("failed", "a\nb", 100), "failed\na\nb");
        let log = format!("{}\nfinal error", "x".repeat(5000));
        let note = message_and_log_end("job failed: final error", &log, NOTE_MAX);
        assert!(note.len() <= NOTE_MAX, "{}", note.len());
        assert!(note.starts_with("job failed: final error\n…x"), "{note}");
        assert!(note.ends_with("\nfinal error"), "{note}");
        // A message longer than half the note gives way to the log's end.
        let long = "m".repeat(3000);
        let note = message_and_log_end(&long, &log, NOTE_MAX);
        assert!(note.len() <= NOTE_MAX);
        assert!(note.starts_with("mmm") && note.ends_with("final error"), "{note}");
        assert!(message_and_log_end(&long, "", 16).len() <= 16);
    }
}
