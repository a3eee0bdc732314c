//! The choice of what eviction removes: the least recently used candidates, just enough of
//! them, kept in a bounded heap while the bookkeeping is scanned.

use crate::store::BlobKey;

/// One file that eviction may remove.
pub(super) struct Candidate {
    pub(super) used_ms: u64,
    pub(super) size: u64,
    pub(super) key: BlobKey,
}

impl PartialEq for Candidate {
    fn eq(&self, other: &Self) -> bool {
        self.used_ms == other.used_ms
    }
}
impl Eq for Candidate {}
impl PartialOrd for Candidate {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Candidate {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.used_ms.cmp(&other.used_ms)
    }
}

/// The least recently used candidates whose bytes reach `need`, and no more: the most
/// recently used one is dropped whenever the rest still reach it.
pub(super) struct Oldest {
    need: u64,
    bytes: u64,
    heap: std::collections::BinaryHeap<Candidate>,
}

impl Oldest {
    pub(super) fn new(need: u64) -> Self {
        Self {
            need,
            bytes: 0,
            heap: std::collections::BinaryHeap::new(),
        }
    }

    pub(super) fn offer(&mut self, c: Candidate) {
        self.bytes += c.size;
        self.heap.push(c);
        while let Some(newest) = self.heap.peek() {
            if self.bytes - newest.size < self.need {
                break;
            }
            self.bytes -= newest.size;
            self.heap.pop();
        }
    }

    pub(super) fn into_oldest_first(self) -> Vec<Candidate> {
        self.heap.into_sorted_vec()
    }
}
