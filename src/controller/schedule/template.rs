//! Slot placeholders in a build template: `${slot:FORMAT}` is the slot's time in the schedule's time
//! zone formatted with a strftime FORMAT, `${slot-1d:FORMAT}` the same time offset by whole units
//! (`h` hours of real time; `d` days, `w` weeks, `M` months of the calendar, at the same wall clock
//! time, moved forward out of a DST gap). Every `${` starts a placeholder, so a malformed one is an
//! error and never literal text. Pure: parsing, checking and expanding.
//!
//! Admission checks the same syntax with a CEL rule (`crd::schedule`); the operator checks what CEL
//! cannot (the FORMAT directives, what a value expands to) and reports it in `Stalled`.

use jiff::{Span, Timestamp, Zoned, fmt::strtime, tz::TimeZone};

/// The longest number of units an offset may name (as the CEL rule: 1 to 4 digits).
const MAX_OFFSET: i64 = 9999;

/// What is wrong with a template value.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TemplateError {
    /// A `${` that does not start a valid placeholder.
    #[error(
        "{field}: {problem} in {text:?}; a slot placeholder reads ${{slot:FORMAT}} or ${{slot-1d:FORMAT}} (units h, d, w, M)"
    )]
    Syntax {
        /// Where (`buildTemplate.spec.rerunToken`, ...).
        field: String,
        /// The value.
        text: String,
        /// What is wrong.
        problem: String,
    },
    /// The FORMAT (or the offset) cannot be applied.
    #[error("{field}: ${{slot...:{format}}} cannot be formatted: {reason}")]
    Format {
        /// Where.
        field: String,
        /// The FORMAT.
        format: String,
        /// Why.
        reason: String,
    },
    /// The expanded value is not acceptable where it goes.
    #[error("{field} expands to {value:?} for the slot {slot}, which {problem}")]
    Expanded {
        /// Where.
        field: String,
        /// The expanded value.
        value: String,
        /// The slot.
        slot: String,
        /// Why it is refused.
        problem: String,
    },
}

/// A unit of an offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Unit {
    Hours,
    Days,
    Weeks,
    Months,
}

/// One piece of a template value.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Piece {
    Text(String),
    Slot { offset: i64, unit: Unit, format: String },
}

/// A parsed template value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Template {
    field: String,
    pieces: Vec<Piece>,
}

impl Template {
    /// Parses `text`, the value of `field` (named in errors).
    pub(crate) fn parse(field: &str, text: &str) -> Result<Template, TemplateError> {
        let syntax = |problem: &str| TemplateError::Syntax {
            field: field.to_string(),
            text: text.to_string(),
            problem: problem.to_string(),
        };
        let mut pieces = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                pieces.push(Piece::Text(rest[..start].to_string()));
            }
            let body_and_more = &rest[start + 2..];
            let end = body_and_more
                .find('}')
                .ok_or_else(|| syntax("a '${' is not closed by '}'"))?;
            pieces.push(placeholder(&body_and_more[..end]).map_err(|p| syntax(&p))?);
            rest = &body_and_more[end + 1..];
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        let template = Template {
            field: field.to_string(),
            pieces,
        };
        // FORMAT directives are checked once here, at a fixed instant: whether a directive is known
        // does not depend on the time.
        template.expand(&Timestamp::UNIX_EPOCH.to_zoned(TimeZone::UTC))?;
        Ok(template)
    }

    /// The value for a slot (given in the schedule's time zone).
    pub(crate) fn expand(&self, slot: &Zoned) -> Result<String, TemplateError> {
        let mut out = String::new();
        for piece in &self.pieces {
            match piece {
                Piece::Text(text) => out.push_str(text),
                Piece::Slot { offset, unit, format } => {
                    let failed = |reason: String| TemplateError::Format {
                        field: self.field.clone(),
                        format: format.clone(),
                        reason,
                    };
                    let at = shift(slot, *offset, *unit).map_err(|e| failed(e.to_string()))?;
                    let text = strtime::format(format, &at).map_err(|e| failed(e.to_string()))?;
                    out.push_str(&text);
                }
            }
        }
        Ok(out)
    }
}

/// Parses the inside of `${...}`: `slot:FORMAT` or `slot<+|-><N><unit>:FORMAT`.
fn placeholder(body: &str) -> Result<Piece, String> {
    let Some(after) = body.strip_prefix("slot") else {
        return Err(format!("'${{{body}}}' is not a slot placeholder"));
    };
    let Some((offset, format)) = after.split_once(':') else {
        return Err(format!("'${{{body}}}' has no ':FORMAT'"));
    };
    if format.is_empty() {
        return Err(format!("'${{{body}}}' has an empty FORMAT"));
    }
    let (offset, unit) = if offset.is_empty() {
        (0, Unit::Days)
    } else {
        parse_offset(offset).ok_or_else(|| {
            format!("'{offset}' is not an offset such as -1d, +2h, -1w or -1M (1 to 4 digits)")
        })?
    };
    Ok(Piece::Slot {
        offset,
        unit,
        format: format.to_string(),
    })
}

fn parse_offset(text: &str) -> Option<(i64, Unit)> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let unit = match rest.chars().last()? {
        'h' => Unit::Hours,
        'd' => Unit::Days,
        'w' => Unit::Weeks,
        'M' => Unit::Months,
        _ => return None,
    };
    let digits = &rest[..rest.len() - 1];
    if digits.is_empty() || digits.len() > 4 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: i64 = digits.parse().ok()?;
    (n <= MAX_OFFSET).then_some((sign * n, unit))
}

/// `slot` moved by `n` units: hours of real time, or calendar days, weeks and months.
fn shift(slot: &Zoned, n: i64, unit: Unit) -> Result<Zoned, jiff::Error> {
    if n == 0 {
        return Ok(slot.clone());
    }
    let span = match unit {
        Unit::Hours => Span::new().try_hours(n)?,
        Unit::Days => Span::new().try_days(n)?,
        Unit::Weeks => Span::new().try_weeks(n)?,
        Unit::Months => Span::new().try_months(n)?,
    };
    slot.checked_add(span)
}

/// Checks a value expanded for `outputs[].partition`, as the DatasetBuild CRD does at admission:
/// parts joined by `|`, `/` or `,`, none empty, no white space, at most 1024 bytes.
pub(crate) fn check_partition(value: &str) -> Result<(), &'static str> {
    if value.is_empty() || value.len() > 1024 {
        return Err("is not 1 to 1024 characters long");
    }
    if value.chars().any(char::is_whitespace) {
        return Err("contains white space, which a DSS partition spec cannot");
    }
    if value.split(['|', ',', '/']).any(str::is_empty) {
        return Err("has an empty part: a DSS partition spec joins values with '|', '/' or ','");
    }
    Ok(())
}

/// Checks a value expanded for `rerunToken` (at most 253 bytes, as the CRD).
pub(crate) fn check_rerun_token(value: &str) -> Result<(), &'static str> {
    if value.len() > 253 {
        return Err("is longer than 253 characters");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paris(utc: &str) -> Zoned {
        utc.parse::<Timestamp>()
            .unwrap()
            .to_zoned(jiff::tz::TimeZone::get("Europe/Paris").unwrap())
    }

    fn expand(text: &str, slot: &Zoned) -> Result<String, TemplateError> {
        Template::parse("f", text)?.expand(slot)
    }

    #[test]
    fn placeholders_expand_in_the_time_zone() {
        // 2024-03-31 03:00 CEST: the first instant after the spring-forward gap.
        let gap = paris("2024-03-31T01:00:00Z");
        let cases = [
            ("the slot's day", "${slot:%Y-%m-%d}", &gap, "2024-03-31"),
            ("yesterday", "${slot-1d:%Y-%m-%d}", &gap, "2024-03-30"),
            (
                "last month, clamped to its last day",
                "${slot-1M:%Y-%m-%d}",
                &gap,
                "2024-02-29",
            ),
            ("a week later", "${slot+1w:%F}", &gap, "2024-04-07"),
            (
                "hours are real time: 03:00 CEST - 1h is 01:00 CET",
                "${slot-1h:%H:%M %Z}",
                &gap,
                "01:00 CET",
            ),
            ("text around", "day=${slot:%d}|FR", &gap, "day=31|FR"),
            ("several", "${slot-1d:%d}/${slot:%d}", &gap, "30/31"),
            ("a lone dollar is text", "cost$5", &gap, "cost$5"),
            (
                "dollars before a placeholder are text",
                "$${slot:%Y}",
                &gap,
                "$2024",
            ),
            ("no placeholder", "NP", &gap, "NP"),
            ("the zone's name", "${slot:%Q}", &gap, "Europe/Paris"),
        ];
        for (name, text, slot, want) in cases {
            assert_eq!(expand(text, slot).unwrap(), want, "{name}");
        }
        // A day back from 02:30 CEST lands in the gap of the day before: moved forward out of it.
        assert_eq!(
            expand("${slot-1d:%H:%M}", &paris("2024-04-01T00:30:00Z")).unwrap(),
            "03:30"
        );
        // In the repeated hour, the offset tells the two passes apart.
        let first = paris("2024-10-27T00:30:00Z");
        let second = paris("2024-10-27T01:30:00Z");
        assert_eq!(expand("${slot:%H:%M%z}", &first).unwrap(), "02:30+0200");
        assert_eq!(expand("${slot:%H:%M%z}", &second).unwrap(), "02:30+0100");
    }

    #[test]
    fn malformed_placeholders_are_refused_with_what_is_wrong() {
        let cases = [
            ("${slot}", "has no ':FORMAT'"),
            ("${slot:}", "has an empty FORMAT"),
            ("${slot-1y:%Y}", "'-1y' is not an offset"),
            ("${slot-12345d:%Y}", "'-12345d' is not an offset"),
            ("${slot1d:%Y}", "'1d' is not an offset"),
            ("${date:%Y}", "is not a slot placeholder"),
            ("${slot:%Y", "is not closed"),
            ("x${}", "is not a slot placeholder"),
            ("${slot:%!}", "cannot be formatted"),
            ("${slot:%}", "cannot be formatted"),
        ];
        for (text, says) in cases {
            let err = Template::parse("buildTemplate.spec.rerunToken", text)
                .unwrap_err()
                .to_string();
            assert!(err.contains(says), "{text}: {err}");
            assert!(err.starts_with("buildTemplate.spec.rerunToken"), "{text}: {err}");
        }
    }

    #[test]
    fn expanded_values_are_checked_as_admission_would() {
        for ok in ["2024-01-01", "2024-01-01|FR", "2024-01/2024-03", "a,b", "NP"] {
            assert_eq!(check_partition(ok), Ok(()), "{ok}");
        }
        for bad in ["", "2024 01", "a||b", "|a", "a/", "a\tb"] {
            assert!(check_partition(bad).is_err(), "{bad:?}");
        }
        assert!(check_partition(&"x".repeat(1025)).is_err());
        assert_eq!(check_rerun_token(&"x".repeat(253)), Ok(()));
        assert!(check_rerun_token(&"x".repeat(254)).is_err());
    }
}
