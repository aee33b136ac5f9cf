//! Event types and patterns as people write them: `sensor/room1/temp`, `sensor/?/temp`,
//! `sensor/*`. The grammar, once, for every text form (the heapless [`EventType`] and, with
//! `alloc`, the owned `EventPath`) and for segments that came from elsewhere (the wire):
//!
//! - segments go between single `/`, none empty (text only: a type built from segments may
//!   hold an empty one, as hat allows);
//! - an event type's segments are literal: no `?` or `*`;
//! - a pattern may hold `?` (any one segment) anywhere and `*` (any rest) only last;
//! - the empty text is the empty type `()` only where a bare path is read
//!   ([`EventType::parse_path`]); as a type or a pattern it is refused, since nobody means it.
//!
//! [`EventType`]: super::EventType
//! [`EventType::parse_path`]: super::EventType::parse_path

use super::{ANY_ONE, ANY_TAIL, Error};

/// Why text (or a list of segments) is not an event type or pattern. Each message says how to
/// write it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PathError {
    /// Nothing is written, where a type or pattern is wanted.
    Empty,
    /// `a//b`, `/a` or `a/`.
    EmptySegment,
    /// `?` or `*` in an event type.
    Wildcard,
    /// `*` before the last segment of a pattern.
    TailNotLast,
    /// More bytes than the type has room for.
    Capacity,
}

impl PathError {
    /// What is wrong, and how to write it instead.
    pub const fn message(self) -> &'static str {
        match self {
            PathError::Empty => {
                "it is empty; write segments between single '/', like sensor/room1/temp, or a pattern like sensor/*"
            }
            PathError::EmptySegment => "a segment is empty; write segments between single '/', like sensor/?/temp",
            PathError::Wildcard => "an event type cannot contain '?' or '*' (those are for patterns)",
            PathError::TailNotLast => "'*' may only be the last segment",
            PathError::Capacity => "too long for the room it is kept in; use fewer or shorter segments",
        }
    }
}

impl core::fmt::Display for PathError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.message())
    }
}

#[cfg(feature = "std")]
impl std::error::Error for PathError {}

/// The model's coarser error, for the APIs that return it.
impl From<PathError> for Error {
    fn from(error: PathError) -> Self {
        match error {
            PathError::Empty | PathError::EmptySegment => Error::EmptySegment,
            PathError::Wildcard | PathError::TailNotLast => Error::InvalidPattern,
            PathError::Capacity => Error::Capacity,
        }
    }
}

/// What a list of segments is read as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Grammar {
    /// A type or a pattern, wildcards unchecked (the caller checks them as it uses it); the
    /// empty text is the empty type.
    Path,
    /// An event type: literal segments only.
    Type,
    /// A subscription or query pattern: `?` anywhere, `*` last.
    Pattern,
}

/// Checks `segments` against `grammar` and hands each to `each`, in order.
#[inline]
pub(crate) fn walk<S: AsRef<[u8]> + Copy>(
    segments: impl Iterator<Item = S>,
    grammar: Grammar,
    mut each: impl FnMut(S) -> Result<(), PathError>,
) -> Result<(), PathError> {
    let (any_one, any_tail) = (ANY_ONE.as_bytes(), ANY_TAIL.as_bytes());
    // A segment after a `*` is the error, so that nothing needs to look ahead.
    let mut after_tail = false;
    for segment in segments {
        let bytes = segment.as_ref();
        match grammar {
            Grammar::Type if bytes == any_one || bytes == any_tail => return Err(PathError::Wildcard),
            Grammar::Pattern if after_tail => return Err(PathError::TailNotLast),
            _ => {}
        }
        after_tail = bytes == any_tail;
        each(segment)?;
    }
    Ok(())
}

/// Reads `text` as `grammar` and hands each segment to `push`, in order.
#[inline]
pub(crate) fn parse<'t>(
    text: &'t str,
    grammar: Grammar,
    mut push: impl FnMut(&'t str) -> Result<(), PathError>,
) -> Result<(), PathError> {
    if text.is_empty() {
        return if grammar == Grammar::Path { Ok(()) } else { Err(PathError::Empty) };
    }
    walk(
        text.split('/'),
        grammar,
        |segment| if segment.is_empty() { Err(PathError::EmptySegment) } else { push(segment) },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The segments `text` reads to as `grammar`, or why not.
    fn read(text: &str, grammar: Grammar) -> Result<std::vec::Vec<&str>, PathError> {
        let mut segments = std::vec::Vec::new();
        parse(text, grammar, |s| {
            segments.push(s);
            Ok(())
        })
        .map(|()| segments)
    }

    /// A text, how it is read, and what comes of it.
    type Case = (&'static str, Grammar, Result<&'static [&'static str], PathError>);

    #[test]
    fn the_grammar_of_each_reading() {
        use Grammar::{Path, Pattern, Type};
        let cases: &[Case] = &[
            ("sensor/room1/temp", Type, Ok(&["sensor", "room1", "temp"])),
            ("sensor/room1/temp", Pattern, Ok(&["sensor", "room1", "temp"])),
            ("a", Type, Ok(&["a"])),
            ("", Path, Ok(&[])),
            ("", Type, Err(PathError::Empty)),
            ("", Pattern, Err(PathError::Empty)),
            ("a//b", Path, Err(PathError::EmptySegment)),
            ("a//b", Pattern, Err(PathError::EmptySegment)),
            ("/a", Type, Err(PathError::EmptySegment)),
            ("a/", Type, Err(PathError::EmptySegment)),
            ("/", Pattern, Err(PathError::EmptySegment)),
            ("sensor/?/temp", Type, Err(PathError::Wildcard)),
            ("sensor/*", Type, Err(PathError::Wildcard)),
            ("sensor/?/temp", Pattern, Ok(&["sensor", "?", "temp"])),
            ("sensor/*", Pattern, Ok(&["sensor", "*"])),
            ("*", Pattern, Ok(&["*"])),
            ("?/*", Pattern, Ok(&["?", "*"])),
            ("a/*/b", Pattern, Err(PathError::TailNotLast)),
            ("*/*", Pattern, Err(PathError::TailNotLast)),
            ("a/*/b", Path, Ok(&["a", "*", "b"])),
            // Only whole segments are wildcards.
            ("a*/b?", Type, Ok(&["a*", "b?"])),
        ];
        for (text, grammar, expected) in cases {
            assert_eq!(read(text, *grammar), expected.map(<[&str]>::to_vec), "{text:?} as {grammar:?}");
        }
    }

    #[test]
    fn a_failed_push_stops_the_reading() {
        let mut pushed = 0;
        let full = parse("a/b/c", Grammar::Type, |_| {
            pushed += 1;
            if pushed == 2 { Err(PathError::Capacity) } else { Ok(()) }
        });
        assert_eq!((full, pushed), (Err(PathError::Capacity), 2));
    }

    /// Each message says what to write, and the model's error keeps the kind.
    #[test]
    fn messages_say_how_to_fix_it() {
        assert!(PathError::Empty.message().contains("sensor/room1/temp"));
        assert!(PathError::EmptySegment.to_string().contains("like sensor/?/temp"));
        assert!(PathError::Wildcard.to_string().contains("those are for patterns"));
        assert!(PathError::TailNotLast.to_string().contains("last segment"));
        assert!(PathError::Capacity.to_string().contains("shorter"));
        assert_eq!(Error::from(PathError::TailNotLast), Error::InvalidPattern);
        assert_eq!(Error::from(PathError::EmptySegment), Error::EmptySegment);
        assert_eq!(Error::from(PathError::Capacity), Error::Capacity);
    }
}
