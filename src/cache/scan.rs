//! A scan of the whole bookkeeping, index records then crate records, a page at a time, as
//! one kind of item: eviction, statistics and checks walk it the same way.

use crate::store::{
    BlobKey, CacheBook, CrateKey, CrateRecord, IndexKey, IndexRecord, SCAN_PAGE, StoreError,
};

/// A record of either kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Rec {
    Index(IndexRecord),
    Crate(CrateRecord),
}

impl Rec {
    pub(crate) fn size(&self) -> u64 {
        match self {
            Rec::Index(r) => r.size,
            Rec::Crate(r) => r.size,
        }
    }

    /// When the file was last written or revalidated.
    pub(crate) fn written_ms(&self) -> u64 {
        match self {
            Rec::Index(r) => r.checked_at_ms,
            Rec::Crate(r) => r.stored_at_ms,
        }
    }
}

/// One scanned record.
pub(crate) struct Seen {
    pub(crate) key: BlobKey,
    /// The record, or why it cannot be read.
    pub(crate) record: Result<Rec, String>,
    pub(crate) used_ms: Option<u64>,
}

impl Seen {
    /// When the file was last used, or else written (0 for an unreadable record: it goes
    /// first).
    pub(crate) fn last_use(&self) -> u64 {
        self.used_ms
            .or(self.record.as_ref().ok().map(Rec::written_ms))
            .unwrap_or(0)
    }
}

pub(crate) struct Scan<'a> {
    book: &'a dyn CacheBook,
    index_after: Option<IndexKey>,
    crate_after: Option<CrateKey>,
    index_done: bool,
    crate_done: bool,
}

impl<'a> Scan<'a> {
    pub(crate) fn new(book: &'a dyn CacheBook) -> Self {
        Self {
            book,
            index_after: None,
            crate_after: None,
            index_done: false,
            crate_done: false,
        }
    }

    /// The next page of records; `None` at the end. Yields to the runtime between pages, so a
    /// scan of a large cache never holds a worker thread for long.
    pub(crate) async fn next_page(&mut self) -> Result<Option<Vec<Seen>>, StoreError> {
        tokio::task::yield_now().await;
        if !self.index_done {
            let page = self
                .book
                .index_page(self.index_after.as_ref(), SCAN_PAGE)
                .await?;
            match page.last() {
                Some(last) => self.index_after = Some(last.key.clone()),
                None => self.index_done = true,
            }
            if !page.is_empty() {
                return Ok(Some(
                    page.into_iter()
                        .map(|s| Seen {
                            key: BlobKey::Index(s.key),
                            record: s.record.map(Rec::Index),
                            used_ms: s.used_ms,
                        })
                        .collect(),
                ));
            }
        }
        if !self.crate_done {
            let page = self
                .book
                .crate_page(self.crate_after.as_ref(), SCAN_PAGE)
                .await?;
            match page.last() {
                Some(last) => self.crate_after = Some(last.key.clone()),
                None => self.crate_done = true,
            }
            if !page.is_empty() {
                return Ok(Some(
                    page.into_iter()
                        .map(|s| Seen {
                            key: BlobKey::Crate(s.key),
                            record: s.record.map(Rec::Crate),
                            used_ms: s.used_ms,
                        })
                        .collect(),
                ));
            }
        }
        Ok(None)
    }
}

/// The registry a key belongs to.
pub(crate) fn registry_of(key: &BlobKey) -> &crate::names::RegistryName {
    match key {
        BlobKey::Index(k) => &k.registry,
        BlobKey::Crate(k) => &k.registry,
    }
}
