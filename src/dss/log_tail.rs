//! The end of a DSS job log, read as a stream: what a failure record shows (`status.failure.logTail`,
//! the failure message and the Warning event).
//!
//! [`DssClient::get_log_tail`](super::DssClient::get_log_tail) feeds the body chunk by chunk through
//! a pipeline that never holds the whole log: UTF-8 decoding (invalid bytes become U+FFFD), removal of
//! the API key and its Basic form anywhere in the text, masking of values that follow credential
//! markers (`jobTicketSecret=`, `password:` ...) on each line, and last the tail itself: the last
//! `max_lines` non-blank lines, cut from the front to `max_bytes` so that the end, where the final
//! error is, is always kept. Secrets are removed before anything is cut, so a cut never leaves part of
//! one behind. [`failure_message`] then picks the line that explains the failure.

use std::collections::VecDeque;

use super::redact::{REDACTED, Redactor};

/// How much of a log's end to keep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LogTailLimits {
    /// The last non-blank lines to keep (at least 1).
    pub max_lines: usize,
    /// The most bytes of text to keep, the `…` marking a cut included (at least 16). Lines before the
    /// last ones that fit are dropped, and the first line kept is cut from its front.
    pub max_bytes: usize,
}

impl LogTailLimits {
    /// The last `max_lines` lines, at most `max_bytes` bytes.
    pub fn new(max_lines: usize, max_bytes: usize) -> Self {
        Self {
            max_lines: max_lines.max(1),
            max_bytes: max_bytes.max(MIN_BYTES),
        }
    }
}

impl Default for LogTailLimits {
    /// 20 lines, 4 KiB.
    fn default() -> Self {
        Self::new(20, 4096)
    }
}

const MIN_BYTES: usize = 16;

/// The end of a job log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogTail {
    /// The last lines, secrets removed, joined with `\n`; starts with `…` when the first kept line
    /// was cut.
    pub text: String,
    /// Whether anything before `text` was dropped (lines or bytes; blank lines aside).
    pub truncated: bool,
    /// The size of the whole log as DSS sent it, in bytes.
    pub bytes_read: u64,
}

impl LogTail {
    /// The line that explains the failure (see [`failure_message`]).
    pub fn failure_message(&self) -> Option<String> {
        failure_message(&self.text)
    }
}

/// Turns a stream of log bytes into its [`LogTail`]. Holds at most a few times `max_bytes` plus the
/// chunk being processed, whatever the size of the log.
#[derive(Debug)]
pub(crate) struct TailCollector {
    utf8: Utf8Decoder,
    redactor: Redactor,
    tail: Tail,
    decoded: String,
    redacted: String,
    bytes_read: u64,
}

impl TailCollector {
    /// A collector removing the API key `secret` (and its Basic form).
    pub(crate) fn new(limits: LogTailLimits, secret: &str) -> Self {
        let limits = LogTailLimits::new(limits.max_lines, limits.max_bytes);
        Self {
            utf8: Utf8Decoder::default(),
            redactor: Redactor::new(secret),
            tail: Tail::new(limits),
            decoded: String::new(),
            redacted: String::new(),
            bytes_read: 0,
        }
    }

    /// Feeds the next bytes of the log.
    pub(crate) fn push(&mut self, chunk: &[u8]) {
        self.bytes_read = self.bytes_read.saturating_add(chunk.len() as u64);
        self.decoded.clear();
        self.utf8.push(chunk, &mut self.decoded);
        self.redacted.clear();
        self.redactor.push(&self.decoded, &mut self.redacted);
        self.tail.push(&self.redacted);
    }

    /// The tail of everything fed.
    pub(crate) fn finish(mut self) -> LogTail {
        self.decoded.clear();
        self.utf8.finish(&mut self.decoded);
        self.redacted.clear();
        self.redactor.push(&self.decoded, &mut self.redacted);
        self.redactor.finish(&mut self.redacted);
        self.tail.push(&self.redacted);
        let (text, truncated) = self.tail.finish();
        LogTail {
            text,
            truncated,
            bytes_read: self.bytes_read,
        }
    }
}

/// Lossy UTF-8 decoding across chunk boundaries: the same text as `String::from_utf8_lossy` of the
/// whole, with a character split between two chunks kept whole.
#[derive(Debug, Default)]
struct Utf8Decoder {
    /// The start of a character whose remaining bytes are in the next chunk (at most 3 bytes).
    carry: Vec<u8>,
}

impl Utf8Decoder {
    fn push(&mut self, mut chunk: &[u8], out: &mut String) {
        while !self.carry.is_empty() && !chunk.is_empty() {
            let width = utf8_width(self.carry[0]);
            let take = width.saturating_sub(self.carry.len()).clamp(1, chunk.len());
            self.carry.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            let pending = std::mem::take(&mut self.carry);
            self.decode(&pending, out);
        }
        if self.carry.is_empty() {
            self.decode(chunk, out);
        }
    }

    fn finish(&mut self, out: &mut String) {
        if !self.carry.is_empty() {
            out.push(char::REPLACEMENT_CHARACTER);
            self.carry.clear();
        }
    }

    /// Decodes `bytes`, keeping an incomplete character at its end in `carry`.
    fn decode(&mut self, mut bytes: &[u8], out: &mut String) {
        loop {
            match std::str::from_utf8(bytes) {
                Ok(text) => {
                    out.push_str(text);
                    return;
                }
                Err(e) => {
                    let (valid, rest) = bytes.split_at(e.valid_up_to());
                    if let Ok(text) = std::str::from_utf8(valid) {
                        out.push_str(text);
                    }
                    match e.error_len() {
                        Some(n) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            bytes = &rest[n..];
                        }
                        None => {
                            self.carry.extend_from_slice(rest);
                            return;
                        }
                    }
                }
            }
        }
    }
}

/// The length of the UTF-8 sequence a byte starts (1 for bytes that start none).
fn utf8_width(first: u8) -> usize {
    match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => 1,
    }
}

/// Credential markers of DSS logs: the value after the next `:` or `=` is masked.
const MARKERS: [&str; 6] = [
    "secret",
    "password",
    "apikey",
    "api_key",
    "token",
    "authorization",
];
const LONGEST_MARKER: usize = 13;

/// Whether the line being read is masked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mask {
    /// No marker seen yet.
    Clear,
    /// A marker was seen; the next `:` or `=` starts the masked value.
    Marker,
    /// The line ends in `***`; the rest of it is dropped as it arrives.
    Masked,
}

/// A complete line of the tail.
#[derive(Debug)]
struct Line {
    text: String,
    /// Its front was cut (it was longer than the byte cap).
    cut: bool,
}

/// The last lines of the text fed, with the line being read.
#[derive(Debug)]
struct Tail {
    limits: LogTailLimits,
    lines: VecDeque<Line>,
    /// Bytes of `lines` joined with `\n` plus one.
    lines_bytes: usize,
    current: String,
    current_has_text: bool,
    current_cut: bool,
    mask: Mask,
    /// Bytes of `current` already searched for markers.
    scanned: usize,
    truncated: bool,
}

impl Tail {
    fn new(limits: LogTailLimits) -> Self {
        Self {
            limits,
            lines: VecDeque::new(),
            lines_bytes: 0,
            current: String::new(),
            current_has_text: false,
            current_cut: false,
            mask: Mask::Clear,
            scanned: 0,
            truncated: false,
        }
    }

    fn push(&mut self, text: &str) {
        let mut rest = text;
        while let Some(nl) = rest.find('\n') {
            self.extend_line(&rest[..nl]);
            self.end_line();
            rest = &rest[nl + 1..];
        }
        self.extend_line(rest);
    }

    fn extend_line(&mut self, text: &str) {
        if text.is_empty() || self.mask == Mask::Masked {
            return;
        }
        let from = floor_boundary(&self.current, self.scanned.saturating_sub(LONGEST_MARKER - 1));
        self.current.push_str(text);
        self.current_has_text |= text.contains(|c: char| !c.is_whitespace());
        self.mask_from(from);
        if self.current.len() > self.limits.max_bytes {
            // Only the line's end can be shown: cut its front now rather than hold it.
            let cut = ceil_boundary(&self.current, self.current.len() - self.limits.max_bytes);
            self.current.drain(..cut);
            self.scanned = self.scanned.saturating_sub(cut);
            self.current_cut = true;
            self.truncated = true;
        }
        self.trim();
    }

    /// Masks the value after the first marker and separator of the line, searching from `from`.
    fn mask_from(&mut self, from: usize) {
        let lower = self.current[from..].to_ascii_lowercase();
        let sep_from = match self.mask {
            Mask::Clear => MARKERS.iter().filter_map(|m| lower.find(m)).min(),
            Mask::Marker => Some(self.scanned.saturating_sub(from)),
            Mask::Masked => None,
        };
        self.scanned = self.current.len();
        let Some(sep_from) = sep_from else { return };
        self.mask = Mask::Marker;
        if let Some(sep) = lower[sep_from..].find([':', '=']) {
            self.current.truncate(from + sep_from + sep + 1);
            self.current.push_str(REDACTED);
            self.mask = Mask::Masked;
            self.scanned = self.current.len();
        }
    }

    fn end_line(&mut self) {
        let mut line = std::mem::take(&mut self.current);
        if line.ends_with('\r') {
            line.pop();
        }
        let (has_text, cut) = (self.current_has_text, self.current_cut);
        self.current_has_text = false;
        self.current_cut = false;
        self.mask = Mask::Clear;
        self.scanned = 0;
        // A line with text stays even when its kept end is blank: it is still the log's line.
        if !has_text {
            return;
        }
        self.lines_bytes += line.len() + 1;
        self.lines.push_back(Line { text: line, cut });
        self.trim();
    }

    /// Drops lines that can no longer be part of the tail: beyond `max_lines`, or wholly before the
    /// last `max_bytes` bytes.
    fn trim(&mut self) {
        let current = if self.current_has_text {
            self.current.len() + 1
        } else {
            0
        };
        let max_lines = self.limits.max_lines - usize::from(self.current_has_text);
        while let Some(front) = self.lines.front() {
            let rest = self.lines_bytes - (front.text.len() + 1) + current;
            if self.lines.len() > max_lines || rest > self.limits.max_bytes {
                self.lines_bytes -= front.text.len() + 1;
                self.lines.pop_front();
                self.truncated = true;
            } else {
                break;
            }
        }
    }

    fn finish(mut self) -> (String, bool) {
        self.end_line();
        let front_cut = self.lines.front().is_some_and(|l| l.cut);
        let text = self
            .lines
            .into_iter()
            .map(|l| l.text)
            .collect::<Vec<_>>()
            .join("\n");
        const CUT: &str = "…";
        if text.len() > self.limits.max_bytes || front_cut {
            let room = self.limits.max_bytes - CUT.len();
            let keep_from = ceil_boundary(&text, text.len().saturating_sub(room));
            return (format!("{CUT}{}", &text[keep_from..]), true);
        }
        (text, self.truncated)
    }
}

fn floor_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

fn ceil_boundary(text: &str, mut at: usize) -> usize {
    at = at.min(text.len());
    while !text.is_char_boundary(at) {
        at += 1;
    }
    at
}

/// The message that explains a failure, from a log (tail): the last error line, else the last line.
///
/// Error lines are those DSS logs at level `ERROR`, `FATAL` or `SEVERE`
/// (`[time] [thread] [LEVEL] [logger] - message`), and lines, in any format, that read as an error:
/// `Caused by: ...` (the root cause of a Java stack trace), `...Exception: ...`, `...Error: ...` (a
/// Python traceback's last line), or the word `ERROR`. Stack frames (`at ...`, `... 3 more`) never
/// count. The message is the line without DSS's prefix of time, thread, level and logger. `None` for
/// a log without a non-blank line.
pub fn failure_message(log: &str) -> Option<String> {
    let lines = log.lines().map(str::trim).filter(|l| !l.is_empty() && *l != "…");
    let last = lines.clone().next_back()?;
    let line = lines.rev().find(|l| is_error_line(l)).unwrap_or(last);
    let (_, message) = dss_fields(line);
    Some(message.trim_start_matches('…').to_owned())
}

fn is_error_line(line: &str) -> bool {
    let (level, message) = dss_fields(line);
    if level.is_some_and(|l| ["ERROR", "FATAL", "SEVERE"].contains(&l)) {
        return true;
    }
    let message = message.trim_start_matches('…').trim_start();
    if message.starts_with("at ") || message.starts_with("...") {
        return false;
    }
    let lower = message.to_ascii_lowercase();
    message.starts_with("Caused by:")
        || message.contains("Exception:")
        || message.ends_with("Exception")
        || message.contains("Error:")
        || lower.starts_with("error:")
        || lower.starts_with("fatal:")
        || message
            .split(|c: char| !c.is_ascii_alphanumeric())
            .any(|word| word == "ERROR" || word == "FATAL")
}

/// The level and message of a line in DSS's format (`[time] [thread] [LEVEL] [logger] - message`),
/// else no level and the whole line.
fn dss_fields(line: &str) -> (Option<&str>, &str) {
    let mut rest = line.trim_start_matches('…');
    let mut fields = Vec::new();
    while let Some(inner) = rest.strip_prefix('[') {
        let Some(end) = inner.find(']') else { break };
        fields.push(&inner[..end]);
        rest = inner[end + 1..].trim_start();
        if fields.len() == 4 {
            break;
        }
    }
    if fields.len() < 3 {
        return (None, line);
    }
    let message = rest.strip_prefix('-').unwrap_or(rest).trim();
    (Some(fields[2].trim()), message)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const KEY: &str = "s3cr3t-k3y";

    fn tail_of(log: &str, limits: LogTailLimits, piece: usize) -> LogTail {
        let mut collector = TailCollector::new(limits, KEY);
        for chunk in log.as_bytes().chunks(piece.max(1)) {
            collector.push(chunk);
        }
        collector.finish()
    }

    #[test]
    fn keeps_the_last_lines_whatever_the_chunking() {
        let log = "a\nb\n\n  \nc\r\nd\n";
        for piece in [1, 2, 3, 100] {
            let tail = tail_of(log, LogTailLimits::new(2, 4096), piece);
            assert_eq!(tail.text, "c\nd", "pieces of {piece}");
            assert!(tail.truncated);
            assert_eq!(tail.bytes_read, log.len() as u64);
            let all = tail_of(log, LogTailLimits::new(10, 4096), piece);
            assert_eq!(all.text, "a\nb\nc\nd");
            assert!(!all.truncated);
        }
        assert_eq!(tail_of("", LogTailLimits::default(), 1).text, "");
        assert_eq!(tail_of("x", LogTailLimits::default(), 1).text, "x");
    }

    #[test]
    fn long_lines_are_cut_from_the_front_so_the_final_error_stays() {
        let head = "H".repeat(10_000);
        let log = format!("first line\n{head} the end: boom\nlast\n");
        for piece in [1, 7, 4096, 100_000] {
            let tail = tail_of(&log, LogTailLimits::new(20, 64), piece);
            assert!(tail.text.len() <= 64, "{} bytes", tail.text.len());
            assert!(tail.text.starts_with('…'), "{}", tail.text);
            assert!(tail.text.ends_with("HHH the end: boom\nlast"), "{}", tail.text);
            assert!(!tail.text.contains("first line"));
            assert!(tail.truncated);
        }
        // One line longer than the cap, with no newline at all.
        let tail = tail_of(&format!("{head}END"), LogTailLimits::new(5, 32), 1000);
        assert_eq!(tail.text, format!("…{}END", "H".repeat(32 - 3 - 3)));
    }

    #[test]
    fn multi_byte_characters_survive_chunking_and_cuts() {
        let log = "ééé 日本語 ✓\n".repeat(50);
        for piece in [1, 2, 3, 5] {
            let tail = tail_of(&log, LogTailLimits::new(3, 40), piece);
            assert!(tail.text.len() <= 40);
            assert!(tail.text.ends_with("ééé 日本語 ✓"), "{}", tail.text);
            assert!(!tail.text.contains('\u{FFFD}'));
        }
        let tail = tail_of("a\u{FFFD}", LogTailLimits::default(), 1);
        assert_eq!(tail.text, "a\u{FFFD}");
        let mut collector = TailCollector::new(LogTailLimits::default(), "");
        collector.push(b"ok \xff \xe2\x82");
        assert_eq!(collector.finish().text, "ok \u{FFFD} \u{FFFD}");
    }

    #[test]
    fn the_key_and_its_basic_form_are_removed_before_any_cut() {
        use base64::Engine as _;
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:"));
        // The key straddles the cut point: removed first, so no piece of it is left.
        let log = format!("{}{KEY}\nsent Basic {basic}\n", "x".repeat(100));
        for piece in [1, 3, 4, 9, 1000] {
            let tail = tail_of(&log, LogTailLimits::new(5, 40), piece);
            assert!(!tail.text.contains("s3cr"), "{}", tail.text);
            assert!(!tail.text.contains("k3y"), "{}", tail.text);
            assert!(!tail.text.contains(&basic[..8]), "{}", tail.text);
            assert!(tail.text.ends_with("xxx***\nsent Basic ***"), "{}", tail.text);
        }
    }

    #[test]
    fn values_after_credential_markers_are_masked_even_when_cut() {
        let cases = [
            (
                "job ticket",
                "c jobTicketSecret=abc123\nd",
                "c jobTicketSecret=***\nd",
            ),
            ("first marker wins", "x token=abc password=xyz", "x token=***"),
            ("colon", "password: a, token=b", "password:***"),
            (
                "marker then later separator",
                "Token for user x, value=abc",
                "Token for user x, value=***",
            ),
            ("no separator", "the token expired", "the token expired"),
        ];
        for (case, log, expected) in cases {
            for piece in [1, 2, 5, 100] {
                assert_eq!(
                    tail_of(log, LogTailLimits::new(5, 4096), piece).text,
                    expected,
                    "{case}"
                );
            }
        }
        // A marker far before the kept end of a long line still masks that end.
        let log = format!("apiKey={}\n", "v".repeat(10_000));
        for piece in [1, 100, 20_000] {
            let tail = tail_of(&log, LogTailLimits::new(5, 64), piece);
            assert_eq!(tail.text, "apiKey=***", "pieces of {piece}");
        }
        let log = format!(
            "{} secret {} = {}\n",
            "p".repeat(5000),
            "q".repeat(5000),
            "v".repeat(5000)
        );
        let tail = tail_of(&log, LogTailLimits::new(5, 64), 333);
        assert!(tail.text.ends_with("qq =***"), "{}", tail.text);
        assert!(!tail.text.contains('v'));
    }

    proptest! {
        #[test]
        fn utf8_decoding_across_chunks_matches_the_whole(
            bytes in prop::collection::vec(prop_oneof![any::<u8>(), Just(0xE2u8), Just(0x82u8), Just(b'\n')], 0..200),
            piece in 1usize..9,
        ) {
            let mut decoder = Utf8Decoder::default();
            let mut out = String::new();
            for chunk in bytes.chunks(piece) {
                decoder.push(chunk, &mut out);
            }
            decoder.finish(&mut out);
            prop_assert_eq!(out, String::from_utf8_lossy(&bytes).into_owned());
        }

        #[test]
        fn the_tail_is_the_end_of_the_whole_text(
            lines in prop::collection::vec("[a-z é]{0,30}", 0..40),
            max_lines in 1usize..8,
            max_bytes in 16usize..120,
            piece in 1usize..50,
        ) {
            let log = lines.join("\n");
            let tail = tail_of(&log, LogTailLimits::new(max_lines, max_bytes), piece);
            let wanted: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
            let wanted = wanted[wanted.len().saturating_sub(max_lines)..].join("\n");
            prop_assert!(tail.text.len() <= max_bytes);
            let shown = tail.text.trim_start_matches('…');
            prop_assert!(wanted.ends_with(shown), "{:?} is not the end of {:?}", shown, wanted);
            if wanted.len() <= max_bytes {
                prop_assert_eq!(shown, wanted.as_str());
            } else {
                prop_assert!(shown.len() + 3 + 4 > max_bytes, "kept too little: {:?}", shown);
            }
        }
    }

    #[test]
    fn the_failure_message_is_the_last_error_line() {
        let cases: [(&str, &str, &str); 9] = [
            (
                "emulator activity log",
                "[2026/01/01-10:00:00.000] [ActivityExecutor-1] [INFO] [dku.flow.activity] - Running activity a\n\
                 [2026/01/01-10:00:01.000] [ActivityExecutor-1] [ERROR] [dku.flow.activity] - Activity a FAILED\n\
                 [2026/01/01-10:00:01.000] [ActivityExecutor-1] [ERROR] [dku.flow.activity] - Job failed: boom",
                "Job failed: boom",
            ),
            (
                "error followed by INFO lines",
                "[t] [main] [ERROR] [dku.flow.activity] - Activity compute_x_NP failed\n\
                 [t] [main] [INFO] [dku.flow.jobrunner] - Run thread done\n\
                 [t] [main] [INFO] [dku.flow.jobrunner] - Job finished",
                "Activity compute_x_NP failed",
            ),
            (
                "Java stack trace: the root cause",
                "[t] [act] [ERROR] [dku.flow.activity] - Activity failed\n\
                 com.dataiku.dip.exceptions.ProcessDiedException: The Python process failed (exit code: 1)\n\
                 \tat com.dataiku.dip.ExceptionHandler.handle(ExceptionHandler.java:12)\n\
                 Caused by: java.lang.RuntimeException: table not found\n\
                 \tat com.dataiku.Foo.bar(Foo.java:3)\n\
                 \t... 12 more",
                "Caused by: java.lang.RuntimeException: table not found",
            ),
            (
                "Python traceback logged at INFO",
                "[t] [FT] [INFO] [dku.utils] - Traceback (most recent call last):\n\
                 [t] [FT] [INFO] [dku.utils] -   File \"recipe.py\", line 3, in <module>\n\
                 [t] [FT] [INFO] [dku.utils] - ValueError: boom\n\
                 [t] [FT] [INFO] [dku.utils] - process done",
                "ValueError: boom",
            ),
            (
                "plain ERROR word",
                "starting\nERROR could not connect to db\nstopping",
                "ERROR could not connect to db",
            ),
            (
                "lowercase error prefix",
                "x\nerror: disk full\ny",
                "error: disk full",
            ),
            ("no error line: the last line", "one\ntwo\n\n", "two"),
            ("a cut first line", "…H the end: boom", "H the end: boom"),
            (
                "WARN without error words is not an error",
                "[t] [m] [ERROR] [l] - real\n[t] [m] [WARN] [l] - retrying",
                "real",
            ),
        ];
        for (case, log, expected) in cases {
            assert_eq!(failure_message(log).as_deref(), Some(expected), "{case}");
        }
        assert_eq!(failure_message(""), None);
        assert_eq!(failure_message("\n  \n"), None);
    }
}
