//! Event types and subscription patterns.
//!
//! An event type is a list of string segments, `("sensor", "room1", "temp")`, written `sensor/room1/temp`
//! by people. It is stored and sent *packed*: each segment as `LEB128(len) ++ UTF-8`, back to
//! back. The same bytes serve the wire, the borrowed view [`EventTypeRef`] (zero copies on a
//! device) and the owned [`EventType`] (a `heapless::Vec<u8, N>`), so converting is a memcpy.

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::path::{self, Grammar, PathError};
use super::{Error, leb128};

/// Segment `?` matches exactly one segment; `*` (last only) matches zero or more.
pub const ANY_ONE: &str = "?";
pub const ANY_TAIL: &str = "*";

/// Default capacity in bytes of an owned event type: the packed segments, one length byte each.
pub const TYPE_BYTES: usize = 64;

/// A validated borrowed event type (or pattern).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventTypeRef<'a> {
    packed: &'a [u8],
}

impl<'a> EventTypeRef<'a> {
    /// The type with no segments, `()`.
    pub const EMPTY: EventTypeRef<'static> = EventTypeRef { packed: &[] };

    /// Checks packed segments: every length in bounds, every segment UTF-8.
    pub fn from_packed(packed: &'a [u8]) -> Result<Self, Error> {
        // Most types are ASCII, and then every segment is UTF-8 whatever the cuts: only the
        // lengths need checking. A host (`std`) does this for every event it routes and stores;
        // a device is spared the extra code.
        let ascii = cfg!(feature = "std") && packed.is_ascii();
        let mut rest = packed;
        while !rest.is_empty() {
            let (len, used) = leb128::decode(rest)?;
            let seg = rest.get(used..).and_then(|r| r.get(..len)).ok_or(Error::Truncated)?;
            if !ascii {
                core::str::from_utf8(seg).map_err(|_| Error::Utf8)?;
            }
            rest = rest.get(used + len..).unwrap_or(&[]);
        }
        Ok(EventTypeRef { packed })
    }

    /// A view of `packed` that [`EventTypeRef::from_packed`] (or whole UTF-8 segments packed
    /// one by one) made: not checked again. Were it not so, the segments would end at the first
    /// bad one rather than fail.
    #[cfg(feature = "alloc")]
    pub(crate) fn from_checked(packed: &'a [u8]) -> Self {
        EventTypeRef { packed }
    }

    pub fn segments(&self) -> Segments<'a> {
        Segments { rest: self.packed }
    }

    /// The segments as bytes (UTF-8 each, as [`EventTypeRef::segments`] gives them).
    pub fn segment_bytes(&self) -> SegmentBytes<'a> {
        SegmentBytes { rest: self.packed }
    }

    /// Number of segments.
    pub fn len(&self) -> usize {
        self.segments().count()
    }

    pub fn is_empty(&self) -> bool {
        self.packed.is_empty()
    }

    pub fn as_packed(&self) -> &'a [u8] {
        self.packed
    }

    /// Whether these segments make a pattern: `*` only last (hat: "invalid query event type").
    pub fn check_pattern(&self) -> Result<(), PathError> {
        path::walk(self.segments(), Grammar::Pattern, |_| Ok(()))
    }

    /// Whether these segments make an event type: no `?` or `*`.
    pub fn check_type(&self) -> Result<(), PathError> {
        path::walk(self.segment_bytes(), Grammar::Type, |_| Ok(()))
    }

    /// Whether `event_type` matches this type read as a pattern, with hat-event's rules:
    /// `?` is exactly one segment of any value, a trailing `*` is zero or more segments, and
    /// there is no implicit prefix match. Segments of `event_type` are always literal.
    pub fn matches(&self, event_type: EventTypeRef<'_>) -> bool {
        let mut types = event_type.segments();
        for pattern in self.segments() {
            if pattern == ANY_TAIL {
                return true;
            }
            match types.next() {
                Some(seg) if pattern == ANY_ONE || pattern == seg => {}
                _ => return false,
            }
        }
        types.next().is_none()
    }

    /// Whether some event type matches both this pattern and `other` (with the rules of
    /// [`EventTypeRef::matches`]): gateways whose subscriptions overlap find each other by it.
    pub fn overlaps(&self, other: EventTypeRef<'_>) -> bool {
        let mut theirs = other.segments();
        for ours in self.segments() {
            if ours == ANY_TAIL {
                return true;
            }
            match theirs.next() {
                Some(ANY_TAIL) => return true,
                Some(seg) if ours == ANY_ONE || seg == ANY_ONE || seg == ours => {}
                _ => return false,
            }
        }
        theirs.next().is_none_or(|seg| seg == ANY_TAIL)
    }

    pub fn to_owned<const N: usize>(&self) -> Result<EventType<N>, Error> {
        let packed = heapless::Vec::from_slice(self.packed).map_err(|_| Error::Capacity)?;
        Ok(EventType { packed })
    }
}

/// Segments of an event type, in order.
#[derive(Clone, Debug)]
pub struct Segments<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Segments<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let seg = next_segment(&mut self.rest)?;
        core::str::from_utf8(seg).ok()
    }
}

/// The segments of an event type as bytes: what matching and checking need, without taking
/// each segment's UTF-8 apart again (a router does it for every event).
#[derive(Debug, Clone)]
pub struct SegmentBytes<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for SegmentBytes<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        next_segment(&mut self.rest)
    }
}

/// Takes the next length-prefixed segment off `rest`.
fn next_segment<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, used) = leb128::decode(rest).ok()?;
    let seg = rest.get(used..)?.get(..len)?;
    *rest = rest.get(used + len..)?;
    Some(seg)
}

impl fmt::Debug for EventTypeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.segments()).finish()
    }
}

/// Segments joined with `/`, as the CLI writes types.
impl fmt::Display for EventTypeRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, seg) in self.segments().enumerate() {
            if i > 0 {
                f.write_str("/")?;
            }
            f.write_str(seg)?;
        }
        Ok(())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for EventTypeRef<'_> {
    fn format(&self, f: defmt::Formatter<'_>) {
        for (i, seg) in self.segments().enumerate() {
            if i > 0 {
                defmt::write!(f, "/");
            }
            defmt::write!(f, "{=str}", seg);
        }
    }
}

impl Serialize for EventTypeRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.packed)
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for EventTypeRef<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let packed = <&'de [u8]>::deserialize(deserializer)?;
        EventTypeRef::from_packed(packed).map_err(serde::de::Error::custom)
    }
}

/// An owned event type of at most `N` packed bytes.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EventType<const N: usize = TYPE_BYTES> {
    packed: heapless::Vec<u8, N>,
}

impl<const N: usize> EventType<N> {
    pub const fn new() -> Self {
        EventType { packed: heapless::Vec::new() }
    }

    pub fn from_segments<'s>(segments: impl IntoIterator<Item = &'s str>) -> Result<Self, Error> {
        let mut ty = Self::new();
        for seg in segments {
            ty.push(seg)?;
        }
        Ok(ty)
    }

    /// Parses `a/b/c`, a type or a pattern, its wildcards unchecked. The empty string is the
    /// empty type `()`; an empty segment (`a//b`) is an error because people never mean it.
    pub fn parse_path(path: &str) -> Result<Self, Error> {
        Ok(Self::parse_as(path, Grammar::Path)?)
    }

    /// Parses an event type, `sensor/room1/temp` (the grammar is in `model::path`).
    pub fn parse_type(text: &str) -> Result<Self, PathError> {
        Self::parse_as(text, Grammar::Type)
    }

    /// Parses a pattern, `sensor/?/temp` or `sensor/*`.
    pub fn parse_pattern(text: &str) -> Result<Self, PathError> {
        Self::parse_as(text, Grammar::Pattern)
    }

    fn parse_as(text: &str, grammar: Grammar) -> Result<Self, PathError> {
        let mut ty = Self::new();
        path::parse(text, grammar, |segment| ty.push(segment).map_err(|_| PathError::Capacity))?;
        Ok(ty)
    }

    pub fn push(&mut self, segment: &str) -> Result<(), Error> {
        let mut len = [0u8; leb128::MAX_LEN];
        let used = leb128::encode(segment.len(), &mut len);
        let before = self.packed.len();
        let ok = self.packed.extend_from_slice(len.get(..used).unwrap_or(&[])).is_ok()
            && self.packed.extend_from_slice(segment.as_bytes()).is_ok();
        if !ok {
            self.packed.truncate(before);
            return Err(Error::Capacity);
        }
        Ok(())
    }

    pub fn as_ref(&self) -> EventTypeRef<'_> {
        EventTypeRef { packed: &self.packed }
    }

    pub fn segments(&self) -> Segments<'_> {
        self.as_ref().segments()
    }

    pub fn matches(&self, event_type: EventTypeRef<'_>) -> bool {
        self.as_ref().matches(event_type)
    }
}

impl<const N: usize> fmt::Debug for EventType<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.as_ref(), f)
    }
}

impl<const N: usize> fmt::Display for EventType<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.as_ref(), f)
    }
}

#[cfg(feature = "defmt")]
impl<const N: usize> defmt::Format for EventType<N> {
    fn format(&self, f: defmt::Formatter<'_>) {
        self.as_ref().format(f)
    }
}

impl<'a, const N: usize> PartialEq<EventTypeRef<'a>> for EventType<N> {
    fn eq(&self, other: &EventTypeRef<'a>) -> bool {
        self.as_ref() == *other
    }
}

impl<const N: usize> Serialize for EventType<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.as_ref().serialize(serializer)
    }
}

impl<'de, const N: usize> Deserialize<'de> for EventType<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        EventTypeRef::deserialize(deserializer)?.to_owned().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    type Ty = EventType<128>;

    fn ty(segments: &[&str]) -> Ty {
        Ty::from_segments(segments.iter().copied()).unwrap()
    }

    /// peers.md "Subscription wildcards", every case.
    #[test]
    fn hat_wildcard_edge_cases() {
        let cases: &[(&[&str], &[&str], bool)] = &[
            (&["a", "*"], &["a"], true),
            (&["a", "*"], &["a", "b", "c"], true),
            (&["a", "*"], &[], false),
            (&["*"], &[], true),
            (&["*"], &["x", "y"], true),
            (&["?", "*"], &[], false),
            (&["?", "*"], &["x"], true),
            (&["a", "b", "*"], &["a", "b"], true),
            (&[], &[], true),
            (&[], &["a"], false),
            (&["a"], &["a", "b"], false),
            (&["a", "?"], &["a", "*"], true),
            (&["a", "b"], &["a", "?"], false),
            (&["?"], &[], false),
            (&["a", "?", "c"], &["a", "b", "c"], true),
        ];
        for &(pattern, event, expected) in cases {
            assert_eq!(ty(pattern).matches(ty(event).as_ref()), expected, "{pattern:?} vs {event:?}");
        }
    }

    #[test]
    fn star_only_last() {
        assert_eq!(ty(&["a", "*", "b"]).as_ref().check_pattern(), Err(PathError::TailNotLast));
        assert_eq!(ty(&["*", "*"]).as_ref().check_pattern(), Err(PathError::TailNotLast));
        assert!(ty(&["a", "?", "*"]).as_ref().check_pattern().is_ok());
        assert!(ty(&["a", "", "*"]).as_ref().check_pattern().is_ok(), "built segments may be empty");
    }

    #[test]
    fn types_are_literal() {
        assert_eq!(ty(&["a", "?"]).as_ref().check_type(), Err(PathError::Wildcard));
        assert_eq!(ty(&["*"]).as_ref().check_type(), Err(PathError::Wildcard));
        assert!(ty(&["a", "b?", ""]).as_ref().check_type().is_ok());
        assert!(ty(&[]).as_ref().check_type().is_ok());
    }

    #[test]
    fn paths() {
        assert_eq!(Ty::parse_path("a/b/c").unwrap(), ty(&["a", "b", "c"]));
        assert_eq!(Ty::parse_path("").unwrap(), ty(&[]));
        assert_eq!(Ty::parse_path("a//b"), Err(Error::EmptySegment));
        assert_eq!(Ty::parse_path("a/*/b").unwrap(), ty(&["a", "*", "b"]), "a path's wildcards are the caller's");
        assert_eq!(format!("{}", ty(&["x", "y"])), "x/y");
    }

    #[test]
    fn types_and_patterns_from_text() {
        assert_eq!(Ty::parse_type("sensor/room1/temp"), Ok(ty(&["sensor", "room1", "temp"])));
        assert_eq!(Ty::parse_type("sensor/?"), Err(PathError::Wildcard));
        assert_eq!(Ty::parse_type(""), Err(PathError::Empty));
        assert_eq!(Ty::parse_pattern("sensor/?/*"), Ok(ty(&["sensor", "?", "*"])));
        assert_eq!(Ty::parse_pattern("*/x"), Err(PathError::TailNotLast));
        assert_eq!(Ty::parse_pattern("a//b"), Err(PathError::EmptySegment));
        assert_eq!(EventType::<4>::parse_type("abcd"), Err(PathError::Capacity));
        assert_eq!(EventType::<4>::parse_path("abcd"), Err(Error::Capacity));
    }

    #[test]
    fn capacity_is_an_error_and_leaves_the_type_whole() {
        let mut small = EventType::<4>::new();
        small.push("ab").unwrap();
        assert_eq!(small.push("cd"), Err(Error::Capacity));
        assert_eq!(small.segments().collect::<Vec<_>>(), ["ab"]);
    }

    #[test]
    fn bad_packed_bytes_are_errors() {
        assert_eq!(EventTypeRef::from_packed(&[3, b'a']), Err(Error::Truncated));
        assert_eq!(EventTypeRef::from_packed(&[1, 0xff]), Err(Error::Utf8));
        assert_eq!(EventTypeRef::from_packed(&[0x80]), Err(Error::Truncated));
    }

    /// The obvious recursive definition of hat's matcher, on plain vectors.
    fn reference_match(pattern: &[String], event: &[String]) -> bool {
        match (pattern.first(), event.first()) {
            (None, None) => true,
            (Some(p), _) if p == "*" => true,
            (Some(p), Some(e)) if p == "?" || p == e => reference_match(&pattern[1..], &event[1..]),
            _ => false,
        }
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("a".to_string()),
            Just("b".to_string()),
            Just("?".to_string()),
            Just("*".to_string()),
            "[a-c]{0,2}"
        ]
    }

    proptest! {
        #[test]
        fn matcher_agrees_with_reference(
            pattern in proptest::collection::vec(segment(), 0..5),
            event in proptest::collection::vec(segment(), 0..5),
        ) {
            let p = Ty::from_segments(pattern.iter().map(String::as_str)).unwrap();
            let e = Ty::from_segments(event.iter().map(String::as_str)).unwrap();
            if p.as_ref().check_pattern().is_ok() {
                prop_assert_eq!(p.matches(e.as_ref()), reference_match(&pattern, &event));
            }
        }

        #[test]
        fn overlap_is_a_shared_match(
            a in proptest::collection::vec(segment(), 0..4),
            b in proptest::collection::vec(segment(), 0..4),
        ) {
            let p = Ty::from_segments(a.iter().map(String::as_str)).unwrap();
            let q = Ty::from_segments(b.iter().map(String::as_str)).unwrap();
            prop_assume!(p.as_ref().check_pattern().is_ok() && q.as_ref().check_pattern().is_ok());
            // A witness needs only the patterns' own literals and one other segment.
            let mut alphabet: Vec<&str> =
                a.iter().chain(&b).map(String::as_str).filter(|s| *s != "?" && *s != "*").collect();
            alphabet.push("zz");
            alphabet.sort_unstable();
            alphabet.dedup();
            let mut witness = false;
            let mut types: Vec<Vec<&str>> = vec![Vec::new()];
            for _ in 0..=4 {
                witness |= types.iter().any(|t| {
                    let t = Ty::from_segments(t.iter().copied()).unwrap();
                    p.matches(t.as_ref()) && q.matches(t.as_ref())
                });
                types = types.iter().flat_map(|t| alphabet.iter().map(move |s| [t.as_slice(), &[*s]].concat())).collect();
            }
            prop_assert_eq!(p.as_ref().overlaps(q.as_ref()), witness, "{:?} {:?}", a, b);
            prop_assert_eq!(q.as_ref().overlaps(p.as_ref()), witness, "symmetric");
        }

        #[test]
        fn postcard_round_trip(segments in proptest::collection::vec(".{0,8}", 0..6)) {
            let t = EventType::<256>::from_segments(segments.iter().map(String::as_str)).unwrap();
            let mut buf = [0u8; 512];
            let bytes = postcard::to_slice(&t, &mut buf).unwrap();
            let back: EventTypeRef<'_> = postcard::from_bytes(bytes).unwrap();
            prop_assert_eq!(back.segments().collect::<Vec<_>>(), segments.iter().map(String::as_str).collect::<Vec<_>>());
        }

        #[test]
        fn from_packed_never_panics(bytes: Vec<u8>) {
            if let Ok(t) = EventTypeRef::from_packed(&bytes) {
                let _ = t.segments().count();
            }
        }
    }
}
