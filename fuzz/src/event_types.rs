//! Target `event_types`: packed event types, paths and wildcard matching.
//!
//! Input: `split: u8`, then bytes cut at `split` (modulo their length) into a pattern and an
//! event type, each read as packed segments (`LEB128(len) ++ UTF-8`, the wire form) and, when
//! UTF-8, as a `a/b/c` path too.
//!
//! Asserts: packed bytes that check out pack again to the same bytes from their segments, count
//! as many segments as they iterate, go through postcard unchanged and, as owned types, through a
//! `TypeListBuf` (push, contains, remove); a path parses to segments that print back to it;
//! `check_pattern` fails exactly when `*` is not last; and `matches` agrees with a brute-force
//! matcher on every pair of pattern and type the input holds, directly and through a list.

use rivulet_core::model::{ANY_ONE, ANY_TAIL, Error, EventType, EventTypeRef, TypeList, TypeListBuf};

use super::input::Input;

type Owned = EventType<512>;

pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let split = usize::from(input.byte());
    let rest = input.rest();
    let (a, b) = rest.split_at(split.min(rest.len()));

    let mut types: Vec<Vec<String>> = Vec::new();
    for bytes in [a, b, rest] {
        if let Some(segments) = check_packed(bytes) {
            types.push(segments);
        }
        if let Ok(text) = core::str::from_utf8(bytes)
            && let Some(segments) = check_path(text)
        {
            types.push(segments);
        }
    }
    for pattern in &types {
        for event in &types {
            check_match(pattern, event);
        }
    }
    check_list(&types);
}

/// Checks one packed type; returns its segments when valid.
fn check_packed(bytes: &[u8]) -> Option<Vec<String>> {
    let ty = EventTypeRef::from_packed(bytes).ok()?;
    let segments: Vec<String> = ty.segments().map(str::to_owned).collect();
    assert_eq!(segments.len(), ty.len());
    assert_eq!(ty.is_empty(), segments.is_empty());
    assert_eq!(ty.as_packed(), bytes);
    // Packing the segments again gives the same bytes (lengths are canonical LEB128).
    let repacked = Owned::from_segments(segments.iter().map(String::as_str));
    if let Ok(repacked) = &repacked {
        assert_eq!(repacked.as_ref().as_packed(), bytes, "{segments:?}");
        assert_eq!(repacked.as_ref(), ty);
    } else {
        assert!(bytes.len() > 512, "{bytes:?} fits but did not pack");
    }
    // The owned form holds exactly the packed bytes, or says it cannot.
    match ty.to_owned::<64>() {
        Ok(owned) => assert_eq!(owned.as_ref(), ty),
        Err(_) => assert!(bytes.len() > 64),
    }
    // postcard round trip, borrowed and owned.
    let mut buf = vec![0u8; bytes.len() + 8];
    let encoded = postcard::to_slice(&ty, &mut buf).expect("room");
    let (back, rest) = postcard::take_from_bytes::<EventTypeRef<'_>>(encoded).expect("decodes");
    assert!(rest.is_empty());
    assert_eq!(back, ty);
    if bytes.len() <= 512 {
        let owned: Owned = postcard::from_bytes(encoded).expect("owned decodes");
        assert_eq!(owned.as_ref(), ty);
    }
    // Display joins with '/'; a type with no empty segment and no '/' in one parses back.
    let text = ty.to_string();
    assert_eq!(text, segments.join("/"));
    let plain = segments.iter().all(|s| !s.is_empty() && !s.contains('/'));
    if !segments.is_empty() && plain && bytes.len() <= 512 {
        let parsed = Owned::parse_path(&text);
        assert_eq!(parsed.as_ref().map(Owned::as_ref), Ok(ty), "{text:?}");
    }
    check_pattern_rule(ty, &segments);
    Some(segments)
}

/// Checks a path; returns its segments when it parses.
fn check_path(text: &str) -> Option<Vec<String>> {
    let parsed = Owned::parse_path(text);
    let expected: Option<Vec<&str>> = match text {
        "" => Some(Vec::new()),
        _ => Some(text.split('/').collect()).filter(|s: &Vec<&str>| s.iter().all(|s| !s.is_empty())),
    };
    match (&parsed, expected) {
        (Ok(ty), Some(expected)) => {
            assert_eq!(ty.segments().collect::<Vec<_>>(), expected);
            assert_eq!(ty.to_string(), text);
            check_pattern_rule(ty.as_ref(), &ty.segments().map(str::to_owned).collect::<Vec<_>>());
            Some(expected.into_iter().map(str::to_owned).collect())
        }
        (Err(e), Some(_)) => {
            assert_eq!(*e, Error::Capacity, "{text:?}: only a type too large for the owned capacity fails");
            None
        }
        (Ok(ty), None) => panic!("{text:?} has an empty segment but parsed to {ty:?}"),
        (Err(e), None) => {
            assert!(matches!(e, Error::EmptySegment | Error::Capacity), "{text:?}: {e:?}");
            None
        }
    }
}

fn check_pattern_rule(ty: EventTypeRef<'_>, segments: &[String]) {
    let star_inside = segments.iter().position(|s| s == ANY_TAIL).is_some_and(|at| at + 1 < segments.len());
    assert_eq!(ty.check_pattern().is_err(), star_inside, "{segments:?}");
}

/// hat's matching by brute force: a pattern without a trailing `*` has as many segments as the
/// type, each `?` or equal; with one, the type starts with such a run and may go on.
fn brute_force_match(pattern: &[String], event: &[String]) -> bool {
    let (fixed, open) = match pattern.split_last() {
        Some((last, head)) if last == ANY_TAIL => (head, true),
        _ => (pattern, false),
    };
    let length_ok = if open { event.len() >= fixed.len() } else { event.len() == fixed.len() };
    length_ok && fixed.iter().zip(event).all(|(p, e)| p == ANY_ONE || p == e)
}

fn check_match(pattern: &[String], event: &[String]) {
    let (Ok(p), Ok(e)) = (
        Owned::from_segments(pattern.iter().map(String::as_str)),
        Owned::from_segments(event.iter().map(String::as_str)),
    ) else {
        return;
    };
    let matched = p.matches(e.as_ref());
    assert_eq!(matched, p.as_ref().matches(e.as_ref()));
    if p.as_ref().check_pattern().is_ok() {
        assert_eq!(matched, brute_force_match(pattern, event), "{pattern:?} vs {event:?}");
        // Every valid pattern matches itself read as a type (`?` and `*` are literal there).
        assert!(p.matches(p.as_ref()), "{pattern:?}");
    }
}

/// The types in a `TypeListBuf` and through postcard as a `TypeList`: membership, matching and
/// removal agree with plain vectors.
fn check_list(types: &[Vec<String>]) {
    let owned: Vec<Owned> =
        types.iter().filter_map(|t| Owned::from_segments(t.iter().map(String::as_str)).ok()).collect();
    let mut list = TypeListBuf::<2048>::new();
    let mut model: Vec<&Owned> = Vec::new();
    for ty in &owned {
        if list.push(ty.as_ref()).is_ok() {
            model.push(ty);
        }
    }
    assert_eq!(list.len(), model.len());
    assert_eq!(list.list().iter().count(), model.len());
    let mut buf = vec![0u8; 4096];
    let encoded = postcard::to_slice(&list.list(), &mut buf).expect("room");
    let received: TypeList<'_> = postcard::from_bytes(encoded).expect("a list decodes");
    assert_eq!(received.len(), model.len());
    for event in &owned {
        let expected = model.iter().any(|p| p.as_ref().check_pattern().is_ok() && p.matches(event.as_ref()));
        let got = received.iter().any(|p| p.check_pattern().is_ok() && p.matches(event.as_ref()));
        assert_eq!(got, expected);
        assert_eq!(list.contains(event.as_ref()), model.contains(&event));
    }
    if let Some(first) = model.first() {
        let copies = model.iter().filter(|m| *m == first).count();
        assert_eq!(list.remove(first.as_ref()), copies);
        assert!(!list.contains(first.as_ref()));
        assert_eq!(list.len(), model.len() - copies);
    }
}
