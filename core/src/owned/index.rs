//! A trie of subscription patterns, so that routing one event costs the segments of its type and
//! the keys it finds, not a test of every pattern of every connection.
//!
//! A pattern is a path from the root: a literal segment follows the edge of that name and `?`
//! follows the node's one wildcard edge. The key is kept where the path ends: as *exact* (the event
//! type must end there too) or, for `*`, as *tail* (the type may stop there or go on). Routing
//! walks the type's segments, taking at each node its literal edge and its `?` edge, and collects
//! the tail keys it passes and the exact keys where the type ends. That is hat-event's matcher
//! ([`EventPath::matches`]) spread over every pattern at once; the tests hold the two together.
//!
//! Memory, roughly, on 64-bit: a node is 80 bytes (its edge list, `?` edge, exact and tail keys),
//! stored inline in its parent's edge list next to a 16-byte `Box<str>` label whose bytes take one
//! more small heap block: about 100 bytes plus the label per distinct prefix. Each key then costs
//! `size_of::<K>()` at every node where one of its patterns ends, and keeps a copy of its patterns
//! (24 bytes plus the packed bytes each) so that it can be removed. Patterns sharing a prefix share
//! its nodes, so 10,000 subscriptions of a few shapes take far fewer than 10,000 × depth nodes.

use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec::Vec;

use super::EventPath;
use crate::model::{ANY_ONE, ANY_TAIL, EventTypeRef, SegmentBytes, Segments};

/// Which keys (connections) subscribed to which patterns, indexed by pattern so that the keys
/// wanting an event type are found without testing every pattern.
#[derive(Debug)]
pub struct SubscriptionIndex<K> {
    root: Node<K>,
    /// Each key's patterns as they sit in the trie (cut after the first `*`, sorted, no
    /// duplicates): `remove` walks them again to find the key's nodes.
    patterns: BTreeMap<K, Vec<EventPath>>,
}

#[derive(Debug)]
struct Node<K> {
    /// Children by literal segment, sorted for binary search: no hashing per segment, and no
    /// table to pay for on the many nodes that have one child or none.
    literals: Vec<(Box<str>, Node<K>)>,
    /// The child for `?`.
    any_one: Option<Box<Node<K>>>,
    /// Keys with a pattern that ends here: the event type must end here too.
    exact: Vec<K>,
    /// Keys with a pattern that ends here with `*`: any rest of the event type, none included.
    tail: Vec<K>,
}

impl<K> Default for Node<K> {
    fn default() -> Self {
        Node { literals: Vec::new(), any_one: None, exact: Vec::new(), tail: Vec::new() }
    }
}

impl<K> Default for SubscriptionIndex<K> {
    fn default() -> Self {
        SubscriptionIndex { root: Node::default(), patterns: BTreeMap::new() }
    }
}

impl<K: Copy + Ord> SubscriptionIndex<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `key`'s patterns, replacing those it had (an empty list takes it out). A `*` ends a
    /// pattern wherever it stands, as in the reference matcher; servers refuse such patterns
    /// before they get here anyway (`check_pattern`).
    pub fn insert(&mut self, key: K, patterns: &[EventPath]) {
        let mut cut: Vec<EventPath> = patterns.iter().map(cut_after_tail).collect();
        cut.sort_unstable();
        cut.dedup();
        if self.patterns.get(&key) == Some(&cut) {
            // A client sending the same list again (every Init does) costs no trie work.
            return;
        }
        self.remove(key);
        if cut.is_empty() {
            return;
        }
        for pattern in &cut {
            // Patterns are distinct after the cut, so each lands on its own (node, list) and the
            // key is in each list at most once.
            self.root.insert(pattern.as_ref().segments(), key);
        }
        self.patterns.insert(key, cut);
    }

    /// Takes `key` and its patterns out, freeing the nodes no other pattern uses.
    pub fn remove(&mut self, key: K) {
        if let Some(patterns) = self.patterns.remove(&key) {
            for pattern in &patterns {
                self.root.remove(pattern.as_ref().segments(), &key);
            }
        }
    }

    /// Replaces the contents of `out` with the keys that have a pattern matching `event_type`,
    /// each once, in ascending order (so callers can merge or group without hashing). Allocates
    /// nothing but `out`'s growth: reuse one `out` across calls.
    pub fn matching(&self, event_type: &EventPath, out: &mut Vec<K>) {
        self.matching_type(event_type.as_ref(), out);
    }

    /// [`SubscriptionIndex::matching`] for a borrowed type (a stored event's, say).
    pub fn matching_type(&self, event_type: EventTypeRef<'_>, out: &mut Vec<K>) {
        out.clear();
        self.root.collect(event_type.segment_bytes(), out);
        // A key reaches `out` once per matching pattern; sorting in place needs no buffer.
        out.sort_unstable();
        out.dedup();
    }
}

impl<K: Copy + Ord> Node<K> {
    fn insert(&mut self, mut segments: Segments<'_>, key: K) {
        let mut node = self;
        loop {
            match segments.next() {
                None => return node.exact.push(key),
                Some(ANY_TAIL) => return node.tail.push(key),
                Some(ANY_ONE) => node = &mut **node.any_one.get_or_insert_with(Box::default),
                Some(literal) => {
                    let at = match node.literals.binary_search_by(|(label, _)| (**label).cmp(literal)) {
                        Ok(at) => at,
                        Err(at) => {
                            node.literals.insert(at, (literal.into(), Node::default()));
                            at
                        }
                    };
                    let Some((_, child)) = node.literals.get_mut(at) else { return };
                    node = child;
                }
            }
        }
    }

    /// Undoes `insert` of the same segments, dropping the children left with nothing in them.
    fn remove(&mut self, mut segments: Segments<'_>, key: &K) {
        match segments.next() {
            None => forget(&mut self.exact, key),
            Some(ANY_TAIL) => forget(&mut self.tail, key),
            Some(ANY_ONE) => {
                if let Some(child) = self.any_one.as_deref_mut() {
                    child.remove(segments, key);
                    if child.is_empty() {
                        self.any_one = None;
                    }
                }
            }
            Some(literal) => {
                let Ok(at) = self.literals.binary_search_by(|(label, _)| (**label).cmp(literal)) else { return };
                let emptied = self.literals.get_mut(at).is_some_and(|(_, child)| {
                    child.remove(segments, key);
                    child.is_empty()
                });
                if emptied {
                    self.literals.remove(at);
                }
            }
        }
    }

    fn is_empty(&self) -> bool {
        self.literals.is_empty() && self.any_one.is_none() && self.exact.is_empty() && self.tail.is_empty()
    }

    /// Pushes the keys of this subtree whose patterns match `rest`, the event type's segments
    /// after this node's path. Recursion depth is the type's segment count.
    fn collect(&self, mut rest: SegmentBytes<'_>, out: &mut Vec<K>) {
        out.extend_from_slice(&self.tail);
        let Some(segment) = rest.next() else {
            out.extend_from_slice(&self.exact);
            return;
        };
        // The event's segments are literal: its `?` or `*` is matched by the `?` edge, and by a
        // literal edge only if one has that name (none can: patterns use those as wildcards).
        let found = self.literals.binary_search_by(|(label, _)| label.as_bytes().cmp(segment)).ok();
        if let Some((_, child)) = found.and_then(|at| self.literals.get(at)) {
            child.collect(rest.clone(), out);
        }
        if let Some(child) = &self.any_one {
            child.collect(rest, out);
        }
    }
}

/// `pattern` up to and including its first `*`: what comes after it never affects a match.
fn cut_after_tail(pattern: &EventPath) -> EventPath {
    let mut cut = Vec::new();
    for segment in pattern.segments() {
        cut.push(segment);
        if segment == ANY_TAIL {
            break;
        }
    }
    EventPath::new(cut)
}

fn forget<K: PartialEq>(keys: &mut Vec<K>, key: &K) {
    if let Some(at) = keys.iter().position(|k| k == key) {
        keys.swap_remove(at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn path(segments: &[&str]) -> EventPath {
        EventPath::new(segments)
    }

    fn matching(index: &SubscriptionIndex<u32>, event_type: &EventPath) -> Vec<u32> {
        let mut out = Vec::new();
        index.matching(event_type, &mut out);
        out
    }

    /// Nodes in the trie, the root included.
    fn nodes<K>(node: &Node<K>) -> usize {
        1 + node.literals.iter().map(|(_, child)| nodes(child)).sum::<usize>()
            + node.any_one.as_deref().map_or(0, nodes)
    }

    /// peers.md "Subscription wildcards" (the core's cases), one pattern per key.
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
            (&["a", ""], &["a", ""], true),
            (&["a", ""], &["a"], false),
            // `*` before the end (refused by `check_pattern`) ends the pattern, as in the core.
            (&["a", "*", "b"], &["a", "x", "y"], true),
            (&["a", "*", "b"], &["b"], false),
        ];
        for (key, &(pattern, event, expected)) in (0u32..).zip(cases) {
            let (pattern, event) = (path(pattern), path(event));
            assert_eq!(pattern.matches(&event), expected, "the reference, {pattern:?} vs {event:?}");
            let mut index = SubscriptionIndex::new();
            index.insert(key, std::slice::from_ref(&pattern));
            let want = if expected { vec![key] } else { vec![] };
            assert_eq!(matching(&index, &event), want, "{pattern:?} vs {event:?}");
        }
    }

    #[test]
    fn each_key_once_in_ascending_order() {
        let mut index = SubscriptionIndex::new();
        // Key 9 matches `a/b` through four patterns (and two nodes' exact and tail lists).
        index.insert(9, &[path(&["a", "b"]), path(&["a", "?"]), path(&["a", "*"]), path(&["a", "b", "*"])]);
        index.insert(3, &[path(&["?", "b"])]);
        index.insert(5, &[path(&["a", "c"])]);
        index.insert(1, &[path(&["*"])]);
        assert_eq!(matching(&index, &path(&["a", "b"])), [1, 3, 9]);
        assert_eq!(matching(&index, &path(&["a", "c"])), [1, 5, 9]);
        assert_eq!(matching(&index, &path(&["z"])), [1]);

        let mut out = vec![77, 78];
        index.matching(&path(&["a", "c"]), &mut out);
        assert_eq!(out, [1, 5, 9], "out is replaced, not appended to");
    }

    #[test]
    fn insert_replaces_and_remove_frees_the_nodes() {
        let mut index = SubscriptionIndex::new();
        index.insert(1, &[path(&["site", "1", "dev", "?", "temp"]), path(&["site", "1", "*"])]);
        index.insert(2, &[path(&["site", "1", "dev", "7", "temp"])]);
        let temp = path(&["site", "1", "dev", "7", "temp"]);
        assert_eq!(matching(&index, &temp), [1, 2]);

        index.insert(1, &[path(&["site", "2", "*"])]);
        assert_eq!(matching(&index, &temp), [2], "the old patterns are gone");
        assert_eq!(matching(&index, &path(&["site", "2"])), [1]);
        // root, site, 1, dev, 7, temp for key 2; 2 for key 1
        assert_eq!(nodes(&index.root), 7, "nodes only key 1's old patterns used are freed");

        index.insert(1, &[]);
        assert_eq!(matching(&index, &path(&["site", "2"])), Vec::<u32>::new());
        index.remove(2);
        index.remove(2);
        assert_eq!(matching(&index, &temp), Vec::<u32>::new());
        assert!(index.root.is_empty() && index.patterns.is_empty(), "{index:?}");
    }

    #[test]
    fn the_same_list_again_changes_nothing_and_duplicates_collapse() {
        let mut index = SubscriptionIndex::new();
        let list = [path(&["a", "*", "x"]), path(&["a", "*"]), path(&["a", "*", "y"]), path(&["b"])];
        index.insert(4, &list);
        assert_eq!(index.patterns[&4], [path(&["a", "*"]), path(&["b"])]);
        index.insert(4, &list);
        assert_eq!(index.root.literals[0].1.tail, [4], "no duplicate in the node");
        index.remove(4);
        assert!(index.root.is_empty());
    }

    fn segment() -> impl Strategy<Value = String> {
        // A small alphabet so that patterns share prefixes and events hit them; `""` is a segment.
        prop_oneof![Just("a"), Just("b"), Just("c"), Just(""), Just("?")].prop_map(String::from)
    }

    fn pattern() -> impl Strategy<Value = EventPath> {
        (proptest::collection::vec(segment(), 0..4), 0..10u8).prop_map(|(mut segments, tail)| {
            match tail {
                0..=3 => segments.push("*".into()),
                // Rarely a `*` before the end, which the reference also accepts.
                4 if !segments.is_empty() => segments.insert(segments.len() / 2, "*".into()),
                _ => {}
            }
            EventPath::new(segments)
        })
    }

    fn event_type() -> impl Strategy<Value = EventPath> {
        // Event segments are literal, so `*` and `?` appear here as plain names too.
        let segment = prop_oneof![segment(), Just("*".to_string()), Just("d".to_string())];
        proptest::collection::vec(segment, 0..5).prop_map(EventPath::new)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, Vec<EventPath>),
        Remove(u8),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..8u8, proptest::collection::vec(pattern(), 0..4)).prop_map(|(key, patterns)| Op::Insert(key, patterns)),
            1 => (0..8u8).prop_map(Op::Remove),
        ]
    }

    proptest! {
        #[test]
        fn agrees_with_a_scan_of_every_pattern(
            ops in proptest::collection::vec(op(), 1..24),
            events in proptest::collection::vec(event_type(), 1..12),
        ) {
            let mut index = SubscriptionIndex::new();
            let mut model: BTreeMap<u8, Vec<EventPath>> = BTreeMap::new();
            let mut out = Vec::new();
            for op in ops {
                match op {
                    Op::Insert(key, patterns) => {
                        index.insert(key, &patterns);
                        model.insert(key, patterns);
                    }
                    Op::Remove(key) => {
                        index.remove(key);
                        model.remove(&key);
                    }
                }
                for event in &events {
                    index.matching(event, &mut out);
                    let scan: Vec<u8> = model
                        .iter()
                        .filter(|(_, patterns)| patterns.iter().any(|p| p.matches(event)))
                        .map(|(&key, _)| key)
                        .collect();
                    prop_assert_eq!(&out, &scan, "event {:?}, patterns {:?}", event, model);
                }
            }
            for key in model.keys() {
                index.remove(*key);
            }
            prop_assert!(index.root.is_empty(), "every node freed: {:?}", index);
            prop_assert!(index.patterns.is_empty());
        }
    }
}
