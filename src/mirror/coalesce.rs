//! Single-flight: concurrent misses for the same key share one piece of work, and optionally a
//! progress handle through which they can follow it before it ends.
//!
//! The rule this module keeps: the work runs in its own task, so it finishes and fills the
//! cache even when every client that asked for it has gone away; a flight removes only its own
//! entry from the table, so a late finisher never evicts a newer flight. Work may hand its
//! callers their value and then go on with a tail (writing to disk, say) while still holding
//! the key, so that the next flight for that key starts only after the tail is done.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};

/// The result of a flight: `None` when the task panicked or was cancelled at shutdown.
pub(super) type Flight<V> = Shared<BoxFuture<'static, Option<V>>>;

/// What a flight's work yields: the value for its callers and, optionally, a tail that runs
/// after they have it, while the flight still holds its key.
pub(super) struct Done<V> {
    value: V,
    tail: Option<BoxFuture<'static, ()>>,
}

impl<V> Done<V> {
    pub(super) fn value(&self) -> &V {
        &self.value
    }

    pub(super) fn then(value: V, tail: impl Future<Output = ()> + Send + 'static) -> Self {
        Self {
            value,
            tail: Some(tail.boxed()),
        }
    }
}

impl<V> From<V> for Done<V> {
    fn from(value: V) -> Self {
        Self { value, tail: None }
    }
}

type Table<K, V, P> = Arc<Mutex<HashMap<K, (u64, Flight<V>, P)>>>;

pub(super) struct Coalescer<K, V, P = ()> {
    inflight: Table<K, V, P>,
    next_id: AtomicU64,
}

impl<K, V, P> Default for Coalescer<K, V, P> {
    fn default() -> Self {
        Self {
            inflight: Arc::default(),
            next_id: AtomicU64::new(0),
        }
    }
}

impl<K, V> Coalescer<K, V>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
{
    /// Joins the flight for `key`, starting it with `work` when none is under way. The flag is
    /// `true` for the caller that started it.
    pub(super) fn join<F, W, O>(&self, key: K, work: W) -> (Flight<V>, bool)
    where
        W: FnOnce() -> F,
        F: Future<Output = O> + Send + 'static,
        O: Into<Done<V>>,
    {
        let (flight, (), leader) = self.join_with(key, (), |()| work());
        (flight, leader)
    }
}

impl<K, V, P> Coalescer<K, V, P>
where
    K: Hash + Eq + Clone + Send + Sync + 'static,
    V: Clone + Send + Sync + 'static,
    P: Clone + Send + 'static,
{
    /// Like [`Coalescer::join`], with a progress handle: a new flight keeps `progress` and
    /// gives `work` a copy; a caller joining a running flight gets that flight's handle.
    pub(super) fn join_with<F, W, O>(&self, key: K, progress: P, work: W) -> (Flight<V>, P, bool)
    where
        W: FnOnce(P) -> F,
        F: Future<Output = O> + Send + 'static,
        O: Into<Done<V>>,
    {
        let mut table = self.inflight.lock().expect("coalescer lock");
        if let Some((_, flight, progress)) = table.get(&key) {
            return (flight.clone(), progress.clone(), false);
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let fut = work(progress.clone());
        let own_table = Arc::clone(&self.inflight);
        let own_key = key.clone();
        // The table lock is held until the flight is inserted, so the task's removal below
        // cannot run before the insertion. The removal is a drop guard so that it also runs
        // when the work panics: a dead flight must not block its key.
        let (value_tx, value_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let _remove = RemoveOnDrop {
                table: own_table,
                key: own_key,
                id,
            };
            let Done { value, tail } = fut.await.into();
            let _ = value_tx.send(value);
            if let Some(tail) = tail {
                tail.await;
            }
        });
        let flight = async move { value_rx.await.ok() }.boxed().shared();
        table.insert(key, (id, flight.clone(), progress.clone()));
        (flight, progress, true)
    }

    /// Flights under way, tails included.
    pub(super) fn len(&self) -> usize {
        self.inflight.lock().expect("coalescer lock").len()
    }

    /// Whether a flight for `key` is under way.
    pub(super) fn is_running(&self, key: &K) -> bool {
        self.inflight
            .lock()
            .expect("coalescer lock")
            .contains_key(key)
    }
}

/// Removes a flight's own entry from the table when its task ends, however it ends.
struct RemoveOnDrop<K: Hash + Eq, V, P> {
    table: Table<K, V, P>,
    key: K,
    id: u64,
}

impl<K: Hash + Eq, V, P> Drop for RemoveOnDrop<K, V, P> {
    fn drop(&mut self) {
        let mut table = match self.table.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        if table.get(&self.key).is_some_and(|(i, _, _)| *i == self.id) {
            table.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_joins_share_one_run_and_later_joins_start_a_new_one() {
        let c: Arc<Coalescer<&'static str, usize>> = Arc::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let mut flights = Vec::new();
        let mut leaders = 0;
        for _ in 0..50 {
            let runs = runs.clone();
            let (f, leader) = c.join("k", move || async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                runs.fetch_add(1, Ordering::SeqCst) + 1
            });
            leaders += usize::from(leader);
            flights.push(f);
        }
        for f in flights {
            assert_eq!(f.await, Some(1));
        }
        assert_eq!((runs.load(Ordering::SeqCst), leaders), (1, 1));
        assert!(!c.is_running(&"k"));

        let (f, leader) = c.join("k", || async { 7 });
        assert!(leader);
        assert_eq!(f.await, Some(7));
    }

    #[tokio::test]
    async fn a_panicking_flight_frees_its_key() {
        let c: Coalescer<u8, u8> = Coalescer::default();
        let (f, _) = c.join(1, || async {
            if true {
                panic!("boom");
            }
            0
        });
        assert_eq!(f.await, None);
        assert!(!c.is_running(&1));
        let (f, leader) = c.join(1, || async { 2 });
        assert!(leader);
        assert_eq!(f.await, Some(2));
    }

    #[tokio::test]
    async fn work_finishes_when_the_caller_goes_away() {
        let c: Coalescer<u8, ()> = Coalescer::default();
        let done = Arc::new(AtomicUsize::new(0));
        let d = done.clone();
        let (f, _) = c.join(1, move || async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            d.fetch_add(1, Ordering::SeqCst);
        });
        drop(f);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn joiners_of_a_running_flight_get_its_progress_handle() {
        let c: Coalescer<u8, u8, Arc<AtomicUsize>> = Coalescer::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (f1, p1, leader) = c.join_with(1, Arc::new(AtomicUsize::new(0)), |p| async move {
            p.store(5, Ordering::SeqCst);
            rx.await.ok();
            1
        });
        assert!(leader);
        let (f2, p2, leader) = c.join_with(1, Arc::new(AtomicUsize::new(9)), |_| async { 2 });
        assert!(!leader);
        assert!(Arc::ptr_eq(&p1, &p2), "the running flight's handle");
        tx.send(()).unwrap();
        assert_eq!((f1.await, f2.await), (Some(1), Some(1)));
        assert_eq!(p2.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn callers_get_the_value_before_the_tail_which_still_holds_the_key() {
        let c: Coalescer<u8, u8> = Coalescer::default();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let (f, _) = c.join(1, move || async move {
            Done::then(3, async move {
                rx.await.ok();
            })
        });
        assert_eq!(f.await, Some(3), "the value comes before the tail ends");
        assert!(c.is_running(&1), "the tail holds the key");
        tx.send(()).unwrap();
        for _ in 0..100 {
            if !c.is_running(&1) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("the key is freed when the tail ends");
    }
}
