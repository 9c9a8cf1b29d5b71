//! The end of a failed job's DSS log, as `status.failure.logTail` and the Warning event keep it:
//! the last lines, bounded, with obvious secrets masked.

use crate::text::truncate;

/// The last `lines` non-empty lines of a DSS log, bounded, with obvious secrets masked.
pub(crate) fn log_tail(log: &str, lines: usize) -> String {
    let tail: Vec<&str> = log
        .lines()
        .rev()
        .filter(|l| !l.trim().is_empty())
        .take(lines)
        .collect();
    let text = tail.into_iter().rev().map(redact).collect::<Vec<_>>().join("\n");
    truncate(&text, 4096)
}

/// Masks values that look like credentials (DSS logs can carry job tickets and tokens).
fn redact(line: &str) -> String {
    const MARKERS: [&str; 6] = [
        "secret",
        "password",
        "apikey",
        "api_key",
        "token",
        "authorization",
    ];
    let lower = line.to_ascii_lowercase();
    // Mask from the earliest marker that is followed by a separator: everything after it goes.
    let cut = MARKERS
        .iter()
        .filter_map(|m| {
            let pos = lower.find(m)?;
            let sep = line[pos..].find([':', '='])?;
            Some(pos + sep)
        })
        .min();
    match cut {
        Some(at) => format!("{}***", &line[..=at]),
        None => line.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_last_lines_and_masks_secrets() {
        let log = "a\nb\n\nc jobTicketSecret=abc123\nd\n";
        assert_eq!(log_tail(log, 2), "c jobTicketSecret=***\nd");
        assert_eq!(redact("x token=abc password=xyz"), "x token=***");
        assert_eq!(redact("password: a, token=b"), "password:***");
        assert_eq!(log_tail("x", 5), "x");
    }
}
