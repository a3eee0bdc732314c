//! Last uses of cached files, noted in memory on each hit and written to the bookkeeping in
//! batches, so that a hit costs no metadata write.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;

use crate::store::{BlobKey, now_ms};

/// Shards, so that hits on many cores rarely wait for one another.
const SHARDS: usize = 16;

/// Files used since the last batch was taken, with when.
pub struct Usage {
    hasher: RandomState,
    shards: [Mutex<HashMap<BlobKey, u64>>; SHARDS],
}

impl Default for Usage {
    fn default() -> Self {
        Self {
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::default()),
        }
    }
}

impl Usage {
    fn shard(&self, key: &BlobKey) -> std::sync::MutexGuard<'_, HashMap<BlobKey, u64>> {
        let i = self.hasher.hash_one(key) as usize % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Notes a use now; the key is cloned only the first time in a batch.
    pub fn note(&self, key: &BlobKey) {
        let now = now_ms();
        let mut shard = self.shard(key);
        match shard.get_mut(key) {
            Some(at) => *at = now,
            None => {
                shard.insert(key.clone(), now);
            }
        }
    }

    /// Whether `key` was used since the last batch was taken.
    pub fn noted(&self, key: &BlobKey) -> bool {
        self.shard(key).contains_key(key)
    }

    /// Puts back a batch that could not be written (a newer use noted meanwhile wins).
    pub fn restore(&self, batch: Vec<(BlobKey, u64)>) {
        for (key, ms) in batch {
            let mut shard = self.shard(&key);
            let at = shard.entry(key).or_insert(ms);
            *at = (*at).max(ms);
        }
    }

    /// The uses noted since the last call, and a fresh start.
    pub fn take(&self) -> Vec<(BlobKey, u64)> {
        let mut out = Vec::new();
        for shard in &self.shards {
            let taken = std::mem::take(&mut *shard.lock().unwrap_or_else(|e| e.into_inner()));
            out.extend(taken);
        }
        out
    }
}
