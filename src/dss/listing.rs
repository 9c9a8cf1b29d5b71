//! Streaming decode of DSS's JSON array answers (job and project listings).
//!
//! The client feeds the body to an [`ArraySplitter`] chunk by chunk as it arrives; the splitter cuts
//! out one array item at a time, and each item is decoded on its own (serde_json, then the lenient
//! decoders of `model.rs`) and handed to the caller's sink, which keeps it, counts it against a cap
//! or drops it. A listing is therefore never held whole: memory is bounded by the largest item
//! ([`MAX_ITEM_BYTES`]) plus what the sink keeps, whatever the number of items. Pure state
//! machines, no IO: `client.rs` does the reading.

use serde_json::Value;

use super::model::JobListItem;

/// The largest array item accepted (a job list item is typically under 2 KiB).
pub(crate) const MAX_ITEM_BYTES: usize = 1024 * 1024;

/// Why a listing could not be decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum ListingError {
    /// The body is not a JSON array of JSON values.
    Invalid(String),
    /// The body exceeds a cap; the text names it.
    TooLarge(String),
}

/// Receives each complete item: its index in the array and its bytes.
pub(crate) type ItemSink<'a> = dyn FnMut(usize, &[u8]) -> Result<(), ListingError> + 'a;

/// Where the splitter is in the document.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// Before the opening `[`.
    Start,
    /// After `[` (an item or `]` may follow) or after `,` (an item must follow).
    BeforeItem { after_comma: bool },
    /// Inside an item.
    InItem,
    /// After an item: `,` or `]`.
    AfterItem,
    /// After the closing `]`: only whitespace may follow.
    End,
}

/// Cuts a JSON array into its items as bytes arrive. It tracks only strings and nesting depth to find
/// where each item ends; every item is then parsed in full by its consumer, so malformed JSON is
/// still refused (by serde_json, with its message).
#[derive(Debug)]
pub(crate) struct ArraySplitter {
    stage: Stage,
    item: Vec<u8>,
    depth: u32,
    in_string: bool,
    escaped: bool,
    index: usize,
    max_item: usize,
}

impl ArraySplitter {
    /// A splitter refusing items over `max_item` bytes.
    pub(crate) fn new(max_item: usize) -> Self {
        Self {
            stage: Stage::Start,
            item: Vec::new(),
            depth: 0,
            in_string: false,
            escaped: false,
            index: 0,
            max_item,
        }
    }

    /// Feeds the next bytes of the body; `on_item` gets each complete item (its index and bytes).
    pub(crate) fn push(&mut self, chunk: &[u8], on_item: &mut ItemSink<'_>) -> Result<(), ListingError> {
        for &b in chunk {
            match self.stage {
                Stage::Start => match b {
                    b'[' => self.stage = Stage::BeforeItem { after_comma: false },
                    _ if b.is_ascii_whitespace() => {}
                    _ => {
                        return Err(ListingError::Invalid(format!(
                            "expected a JSON array, got {}",
                            kind_of(b)
                        )));
                    }
                },
                Stage::BeforeItem { after_comma } => match b {
                    _ if b.is_ascii_whitespace() => {}
                    b']' if !after_comma => self.stage = Stage::End,
                    b']' | b',' => return Err(unexpected(b, self.index)),
                    _ => {
                        self.stage = Stage::InItem;
                        self.item_byte(b, on_item)?;
                    }
                },
                Stage::InItem => self.item_byte(b, on_item)?,
                Stage::AfterItem => match b {
                    _ if b.is_ascii_whitespace() => {}
                    b',' => self.stage = Stage::BeforeItem { after_comma: true },
                    b']' => self.stage = Stage::End,
                    _ => return Err(unexpected(b, self.index)),
                },
                Stage::End => {
                    if !b.is_ascii_whitespace() {
                        return Err(ListingError::Invalid(format!(
                            "trailing characters after the JSON array ({:?})",
                            char::from(b)
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// Checks that the body ended with the array.
    pub(crate) fn finish(&self) -> Result<(), ListingError> {
        match self.stage {
            Stage::End => Ok(()),
            Stage::Start => Err(ListingError::Invalid(
                "expected a JSON array, got an empty body".into(),
            )),
            _ => Err(ListingError::Invalid(format!(
                "the JSON array ends early (after {} items)",
                self.index
            ))),
        }
    }

    /// One byte inside an item. Scalars end at the first delimiter, strings at their closing quote,
    /// objects and arrays when their depth returns to zero.
    fn item_byte(&mut self, b: u8, on_item: &mut ItemSink<'_>) -> Result<(), ListingError> {
        if self.in_string {
            self.keep(b)?;
            if self.escaped {
                self.escaped = false;
            } else if b == b'\\' {
                self.escaped = true;
            } else if b == b'"' {
                self.in_string = false;
                if self.depth == 0 {
                    return self.complete(Stage::AfterItem, on_item);
                }
            }
            return Ok(());
        }
        match b {
            b'"' => {
                self.in_string = true;
                self.keep(b)
            }
            b'{' | b'[' => {
                self.depth = self.depth.saturating_add(1);
                self.keep(b)
            }
            b'}' | b']' if self.depth > 0 => {
                self.depth -= 1;
                self.keep(b)?;
                if self.depth == 0 {
                    self.complete(Stage::AfterItem, on_item)
                } else {
                    Ok(())
                }
            }
            // A scalar item (a number, true, false, null) ends at the first delimiter.
            b']' => self.complete(Stage::End, on_item),
            b',' if self.depth == 0 => self.complete(Stage::BeforeItem { after_comma: true }, on_item),
            _ if self.depth == 0 && b.is_ascii_whitespace() => self.complete(Stage::AfterItem, on_item),
            _ => self.keep(b),
        }
    }

    fn keep(&mut self, b: u8) -> Result<(), ListingError> {
        if self.item.len() >= self.max_item {
            return Err(ListingError::TooLarge(format!(
                "listed item {} is larger than {} bytes",
                self.index, self.max_item
            )));
        }
        self.item.push(b);
        Ok(())
    }

    fn complete(&mut self, next: Stage, on_item: &mut ItemSink<'_>) -> Result<(), ListingError> {
        on_item(self.index, &self.item)?;
        self.item.clear();
        // Release a large item's buffer rather than keep its peak for the rest of the listing.
        self.item.shrink_to(4096);
        self.index += 1;
        self.stage = next;
        Ok(())
    }
}

fn kind_of(first: u8) -> &'static str {
    match first {
        b'{' => "an object",
        b'"' => "a string",
        b't' | b'f' => "a boolean",
        b'n' => "null",
        b'-' | b'0'..=b'9' => "a number",
        _ => "something that is not JSON",
    }
}

fn unexpected(b: u8, index: usize) -> ListingError {
    ListingError::Invalid(format!(
        "invalid JSON array: unexpected {:?} after {index} items",
        char::from(b)
    ))
}

/// A listing decoded as its body streams in: items go to a sink as they complete.
pub(crate) trait Listing {
    /// What one item decodes to.
    type Item;
    /// Feeds the next bytes of the body.
    fn push(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(Self::Item) -> Result<(), ListingError>,
    ) -> Result<(), ListingError>;
    /// Checks the end of the body; returns how many items the array had.
    fn finish(&self) -> Result<usize, ListingError>;
}

/// A sink keeping every item, refusing more than `cap` of them (`what` names them in the error).
pub(crate) fn keep_all<'a, T>(
    items: &'a mut Vec<T>,
    cap: usize,
    what: &'static str,
) -> impl FnMut(T) -> Result<(), ListingError> + 'a {
    move |item| {
        if items.len() >= cap {
            return Err(ListingError::TooLarge(format!("more than {cap} listed {what}")));
        }
        items.push(item);
        Ok(())
    }
}

/// Decodes a job listing item by item: items that are objects naming a job and a project go to
/// `sink`; others (not objects, no job id, no project) are skipped and counted, as the whole-body
/// decoder did.
pub(crate) struct JobListing<'a> {
    splitter: ArraySplitter,
    default_project: Option<&'a str>,
    skipped: usize,
}

impl<'a> JobListing<'a> {
    /// A decoder for a listing whose items without a project belong to `default_project`.
    pub(crate) fn new(default_project: Option<&'a str>) -> Self {
        Self {
            splitter: ArraySplitter::new(MAX_ITEM_BYTES),
            default_project,
            skipped: 0,
        }
    }
}

impl Listing for JobListing<'_> {
    type Item = JobListItem;

    fn push(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(JobListItem) -> Result<(), ListingError>,
    ) -> Result<(), ListingError> {
        let default_project = self.default_project;
        let skipped = &mut self.skipped;
        self.splitter.push(chunk, &mut |index, bytes| {
            let value = parse_item(index, bytes)?;
            match JobListItem::from_value(&value, default_project) {
                Some(job) => sink(job),
                None => {
                    *skipped += 1;
                    Ok(())
                }
            }
        })
    }

    fn finish(&self) -> Result<usize, ListingError> {
        self.splitter.finish()?;
        if self.skipped > 0 {
            tracing::warn!(
                skipped = self.skipped,
                "DSS job listing had items without a job id or project key"
            );
        }
        Ok(self.splitter.index)
    }
}

/// Decodes `GET /projects/` item by item: the `projectKey` of every item goes to `sink` (items without
/// one are skipped).
pub(crate) struct ProjectListing {
    splitter: ArraySplitter,
}

impl ProjectListing {
    /// A decoder.
    pub(crate) fn new() -> Self {
        Self {
            splitter: ArraySplitter::new(MAX_ITEM_BYTES),
        }
    }
}

impl Listing for ProjectListing {
    type Item = String;

    fn push(
        &mut self,
        chunk: &[u8],
        sink: &mut dyn FnMut(String) -> Result<(), ListingError>,
    ) -> Result<(), ListingError> {
        self.splitter.push(chunk, &mut |index, bytes| {
            let value = parse_item(index, bytes)?;
            match value.get("projectKey").and_then(Value::as_str) {
                Some(key) if !key.is_empty() => sink(key.to_owned()),
                _ => Ok(()),
            }
        })
    }

    fn finish(&self) -> Result<usize, ListingError> {
        self.splitter.finish()?;
        Ok(self.splitter.index)
    }
}

fn parse_item(index: usize, bytes: &[u8]) -> Result<Value, ListingError> {
    serde_json::from_slice(bytes)
        .map_err(|e| ListingError::Invalid(format!("invalid JSON in listed item {index}: {e}")))
}

/// Decodes a whole listing held in memory.
#[cfg(test)]
fn decode_all<L: Listing>(mut listing: L, body: &[u8]) -> Result<Vec<L::Item>, String> {
    let mut items = Vec::new();
    listing
        .push(body, &mut |item| {
            items.push(item);
            Ok(())
        })
        .and_then(|()| listing.finish())
        .map_err(|e| format!("{e:?}"))?;
    Ok(items)
}

/// Decodes a whole job listing held in memory.
#[cfg(test)]
pub(crate) fn decode_job_list(
    body: &[u8],
    default_project: Option<&str>,
) -> Result<Vec<JobListItem>, String> {
    decode_all(JobListing::new(default_project), body)
}

/// Decodes a whole `GET /projects/` answer held in memory.
#[cfg(test)]
pub(crate) fn decode_project_keys(body: &[u8]) -> Result<Vec<String>, String> {
    decode_all(ProjectListing::new(), body)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Splits `body` fed in pieces of `piece` bytes; returns the items as parsed values.
    fn split(body: &[u8], piece: usize) -> Result<Vec<Value>, ListingError> {
        let mut splitter = ArraySplitter::new(MAX_ITEM_BYTES);
        let mut items = Vec::new();
        for chunk in body.chunks(piece.max(1)) {
            splitter.push(chunk, &mut |_, bytes| {
                items.push(parse_item(0, bytes)?);
                Ok(())
            })?;
        }
        splitter.finish()?;
        Ok(items)
    }

    #[test]
    fn documents_split_into_their_items_whatever_the_chunking() {
        let cases: [(&str, &str); 8] = [
            ("empty array", "[]"),
            ("whitespace everywhere", " \n[ 1 , 2\t,3 ] \n"),
            ("scalars", r#"[1,-2.5e3,true,false,null,"s"]"#),
            (
                "strings with brackets, quotes and escapes",
                r#"["a]b", "c\"]}", "\\", "\\\"", "é\u00e9"]"#,
            ),
            ("nested", r#"[{"a":[1,{"b":"]"}]},[[[]]],{}]"#),
            ("scalar before the closing bracket", "[{},7]"),
            ("string item last", r#"[1,"x"]"#),
            ("unicode", "[\"日本\", {\"k\":\"ü\"}]"),
        ];
        for (case, body) in cases {
            let expected: Vec<Value> = serde_json::from_str(body).unwrap();
            for piece in [1, 2, 3, 7, 1000] {
                assert_eq!(
                    split(body.as_bytes(), piece).unwrap(),
                    expected,
                    "{case}, pieces of {piece}"
                );
            }
        }
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let cases: [(&str, &str, &str); 12] = [
            ("empty body", "", "empty body"),
            ("whitespace only", "  \n", "empty body"),
            ("an object", r#"{"a":1}"#, "got an object"),
            ("a string", r#""x""#, "got a string"),
            ("a number", "12", "got a number"),
            ("null", "null", "got null"),
            ("HTML", "<html>", "not JSON"),
            ("unterminated", "[1,2", "ends early"),
            ("trailing comma", "[1,]", "unexpected ']'"),
            ("leading comma", "[,1]", "unexpected ','"),
            ("two values without comma", "[1 2]", "unexpected '2'"),
            ("trailing garbage", "[1] x", "trailing characters"),
        ];
        for (case, body, reason) in cases {
            match split(body.as_bytes(), 3) {
                Err(ListingError::Invalid(text)) => assert!(text.contains(reason), "{case}: {text}"),
                other => panic!("{case}: {other:?}"),
            }
        }
        // Item-level syntax errors come from serde_json.
        match split(br#"[{"a":]}]"#, 4) {
            Err(ListingError::Invalid(text)) => {
                assert!(text.contains("invalid JSON in listed item 0"), "{text}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_item_over_the_cap_is_refused_naming_the_cap() {
        let mut splitter = ArraySplitter::new(16);
        let err = splitter
            .push(br#"[{"a":1},{"long":"0123456789abcdef"}]"#, &mut |_, _| Ok(()))
            .unwrap_err();
        assert_eq!(
            err,
            ListingError::TooLarge("listed item 1 is larger than 16 bytes".into())
        );
    }

    #[test]
    fn job_listing_skips_unaddressable_items_and_feeds_the_rest() {
        let body = br#"[{"jobId":"j1","projectKey":"P","state":"RUNNING"},{"state":"DONE"},42,
                        {"def":{"id":"j2"}}]"#;
        let mut listing = JobListing::new(Some("D"));
        let mut ids = Vec::new();
        for chunk in body.chunks(5) {
            listing
                .push(chunk, &mut |job| {
                    ids.push((job.job_id, job.project_key));
                    Ok(())
                })
                .unwrap();
        }
        assert_eq!(listing.finish().unwrap(), 4);
        assert_eq!(ids, [("j1".into(), "P".into()), ("j2".into(), "D".into())]);
    }

    #[test]
    fn keep_all_refuses_items_beyond_its_cap() {
        let mut items = Vec::new();
        let mut sink = keep_all(&mut items, 2, "jobs");
        assert!(sink(1).is_ok() && sink(2).is_ok());
        assert_eq!(
            sink(3),
            Err(ListingError::TooLarge("more than 2 listed jobs".into()))
        );
        drop(sink);
        assert_eq!(items, [1, 2]);
    }

    #[test]
    fn a_sink_error_stops_the_listing() {
        let body = br#"[{"jobId":"a","projectKey":"P"},{"jobId":"b","projectKey":"P"}]"#;
        let mut listing = JobListing::new(None);
        let mut seen = 0;
        let err = listing
            .push(body, &mut |_| {
                seen += 1;
                Err(ListingError::TooLarge("more than 1 listed jobs".into()))
            })
            .unwrap_err();
        assert_eq!(seen, 1);
        assert_eq!(err, ListingError::TooLarge("more than 1 listed jobs".into()));
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::from),
            "[\\[\\]{}\"\\\\,: a-zé]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map("[\\]\"{,a-z]{0,4}", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn splitting_agrees_with_parsing_the_whole_array(
            items in prop::collection::vec(arb_json(), 0..8),
            pretty in any::<bool>(),
            piece in 1usize..64,
        ) {
            let doc = Value::Array(items.clone());
            let body = if pretty { serde_json::to_vec_pretty(&doc).unwrap() } else { serde_json::to_vec(&doc).unwrap() };
            prop_assert_eq!(split(&body, piece).unwrap(), items);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), piece in 1usize..32) {
            let _ = split(&bytes, piece);
            let mut wrapped = b"[".to_vec();
            wrapped.extend_from_slice(&bytes);
            let _ = split(&wrapped, piece);
        }
    }

    #[test]
    fn project_listing_keeps_project_keys() {
        let body = json!([{"projectKey": "A"}, {"name": "x"}, {"projectKey": ""}, {"projectKey": "B"}, 1])
            .to_string();
        assert_eq!(decode_project_keys(body.as_bytes()).unwrap(), ["A", "B"]);
        assert!(decode_project_keys(b"{}").is_err());
    }
}
