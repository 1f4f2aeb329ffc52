//! A RocksDB key-value store for one (store, partition), with the record and commit layers of
//! uncommitted writes on top (see the module docs of `state`).
//!
//! On disk, every key has a one-byte prefix so keyflow's own bookkeeping can never collide with
//! user data. Assigned prefixes are never reused:
//! - `d` + user key: user data
//! - `m` + name: metadata (`format`, `checkpoint` = next changelog offset to restore from,
//!   `position` = the applied-offset guard, `commit` = id of the commit that position came from,
//!   `checkpoint.at` = when the checkpoint was written)

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rocksdb::{Direction, IteratorMode, Options, WriteBatch, WriteOptions, DB};

use super::changelog::{ChangelogEntry, Position, MARKER_KEY, RESET_KEY};
use super::{Error, StoreMemory};

const DATA: u8 = b'd';
const META_FORMAT: &[u8] = b"mformat";
const META_CHECKPOINT: &[u8] = b"mcheckpoint";
const META_POSITION: &[u8] = b"mposition";
const META_COMMIT: &[u8] = b"mcommit";
/// When the checkpoint was written (ms since the epoch, 8 bytes big-endian).
const META_CHECKPOINT_AT: &[u8] = b"mcheckpoint.at";
const FORMAT_VERSION: &str = "1";
/// Bytes of committed values (keys, values and a per-entry overhead) a store keeps in memory.
/// Kafka Streams keeps its record cache across commits for the same reason: a key's next record
/// usually comes soon, and a RocksDB read (memtable skip list, then blocks) costs ~20x a hash
/// lookup; without it every key paid that read once per commit interval.
const READ_CACHE_BYTES: usize = 4 << 20;
const READ_CACHE_ENTRY_OVERHEAD: usize = 64;

type Layer = BTreeMap<Vec<u8>, Option<Vec<u8>>>;
/// Key-value pairs as a range scan returns them.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;
/// Changelog writes: a key and its value, `None` for a tombstone.
pub(crate) type Writes = Vec<(Vec<u8>, Option<Vec<u8>>)>;

/// One state store partition. Reads see the current record's writes, then the writes since the
/// last commit, then the read cache of committed values, then RocksDB.
///
/// Invariant: RocksDB holds exactly the state as of the last commit, together with the changelog
/// offset and source position that describe it (written in one `WriteBatch`).
pub struct Store {
    name: String,
    path: PathBuf,
    db: DB,
    record: Layer,
    commit: Layer,
    checkpoint: Option<i64>,
    /// When `checkpoint` was written, ms since the epoch.
    checkpoint_at: Option<i64>,
    position: Position,
    /// Id of the commit whose marker set `position`.
    last_commit: Option<u64>,
    /// Changelog data read after the last position marker during a restore: it belongs to a
    /// commit whose marker has not been seen (yet), see [`Store::finish_restore`].
    unmarked: Vec<ChangelogEntry>,
    /// Keys the changelog may hold a value for that is not committed state: data of an attempt
    /// that never completed (dropped by a restore, or rolled back here). The next commit writes
    /// their committed value (or a tombstone) again, so the void value is superseded in the log
    /// and the log cleaner can never leave it as the key's last word.
    repairs: BTreeSet<Vec<u8>>,
    /// Committed values (`None`: the key has none) recently read or committed; always equal to
    /// what RocksDB holds for the key.
    cache: RefCell<ReadCache>,
}

/// An LRU of committed values bounded by bytes.
struct ReadCache {
    entries: lru::LruCache<Vec<u8>, Option<Vec<u8>>>,
    bytes: usize,
}

impl ReadCache {
    fn new() -> Self {
        ReadCache { entries: lru::LruCache::unbounded(), bytes: 0 }
    }

    fn size(k: &[u8], v: Option<&[u8]>) -> usize {
        k.len() + v.map_or(0, <[u8]>::len) + READ_CACHE_ENTRY_OVERHEAD
    }

    fn get(&mut self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.entries.get(key).cloned()
    }

    fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.bytes += Self::size(&key, value.as_deref());
        if let Some((k, old)) = self.entries.push(key, value) {
            self.bytes -= Self::size(&k, old.as_deref());
        }
        while self.bytes > READ_CACHE_BYTES {
            let Some((k, v)) = self.entries.pop_lru() else { break };
            self.bytes -= Self::size(&k, v.as_deref());
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("name", &self.name).field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store at `path`, within the instance's `memory` budget.
    ///
    /// # Errors
    /// [`Error::Rocks`] if RocksDB cannot open it, [`Error::Format`] if it was written by an
    /// incompatible keyflow.
    pub fn open(name: &str, path: &Path, memory: &StoreMemory) -> Result<Self, Error> {
        std::fs::create_dir_all(path).map_err(|source| Error::Io { path: path.display().to_string(), source })?;
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.set_compression_type(rocksdb::DBCompressionType::Lz4);
        memory.apply(&mut opts);
        let db = DB::open(&opts, path).map_err(|source| Error::Rocks { store: name.into(), source })?;
        let mut store = Store {
            name: name.to_owned(),
            path: path.to_owned(),
            db,
            record: Layer::new(),
            commit: Layer::new(),
            checkpoint: None,
            checkpoint_at: None,
            position: Position::default(),
            last_commit: None,
            unmarked: Vec::new(),
            repairs: BTreeSet::new(),
            cache: RefCell::new(ReadCache::new()),
        };
        store.load_meta()?;
        Ok(store)
    }

    fn load_meta(&mut self) -> Result<(), Error> {
        match self.db_get(META_FORMAT)? {
            None => self.db.put(META_FORMAT, FORMAT_VERSION).map_err(|e| self.rocks(e))?,
            Some(v) if v == FORMAT_VERSION.as_bytes() => {}
            Some(v) => {
                return Err(Error::Format {
                    store: self.name.clone(),
                    found: String::from_utf8_lossy(&v).into_owned(),
                    expected: FORMAT_VERSION,
                })
            }
        }
        self.checkpoint = match self.db_get(META_CHECKPOINT)? {
            None => None,
            Some(v) => Some(i64::from_be_bytes(v.as_slice().try_into().map_err(|_| self.corrupt("checkpoint", "not 8 bytes"))?)),
        };
        self.last_commit = self.db_get(META_COMMIT)?.and_then(|v| ChangelogEntry::decode_commit(Some(&v)));
        self.checkpoint_at = self.db_get(META_CHECKPOINT_AT)?.and_then(|v| Some(i64::from_be_bytes(v.as_slice().try_into().ok()?)));
        self.position = match self.db_get(META_POSITION)? {
            None => Position::default(),
            Some(v) => Position::decode(&v).map_err(|e| self.corrupt("position", &e.to_string()))?,
        };
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The next changelog offset to restore from, if this store was ever committed or restored.
    pub fn checkpoint(&self) -> Option<i64> {
        self.checkpoint
    }

    /// How old the checkpoint is: a changelog's tombstones older than its `delete.retention.ms`
    /// may be gone, and a restore from a checkpoint before them would bring deleted keys back.
    /// `None` for a store never checkpointed, or checkpointed by a keyflow that did not record it.
    pub fn checkpoint_age(&self) -> Option<std::time::Duration> {
        let at = self.checkpoint_at?;
        Some(std::time::Duration::from_millis(crate::runtime::now_ms().saturating_sub(at).max(0) as u64))
    }

    /// The committed position (applied-offset guard and stream time).
    pub fn position(&self) -> &Position {
        &self.position
    }

    /// Id of the commit the position came from.
    pub(crate) fn last_commit(&self) -> Option<u64> {
        self.last_commit
    }

    /// Reads `key`, seeing uncommitted writes.
    ///
    /// # Errors
    /// [`Error::Rocks`] when RocksDB fails.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        if let Some(v) = self.record.get(key).or_else(|| self.commit.get(key)) {
            return Ok(v.clone());
        }
        if let Some(v) = self.cache.borrow_mut().get(key) {
            return Ok(v);
        }
        let v = self.db_get(&data_key(key))?;
        self.cache.borrow_mut().put(key.to_vec(), v.clone());
        Ok(v)
    }

    /// Writes `key` in the current record's layer.
    ///
    /// # Errors
    /// [`Error::ReservedKey`] for keys starting with 0xFF.
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        self.check_key(key)?;
        self.record.insert(key.to_vec(), Some(value.to_vec()));
        Ok(())
    }

    /// Deletes `key` in the current record's layer.
    ///
    /// # Errors
    /// [`Error::ReservedKey`] for keys starting with 0xFF.
    pub fn delete(&mut self, key: &[u8]) -> Result<(), Error> {
        self.check_key(key)?;
        self.record.insert(key.to_vec(), None);
        Ok(())
    }

    /// Up to `limit` entries with `from <= key < to` in key order, seeing uncommitted writes.
    ///
    /// # Errors
    /// [`Error::Rocks`] when RocksDB fails.
    pub fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Result<Entries, Error> {
        let mut overlay: Layer = self.commit.range(from.to_vec()..to.to_vec()).map(|(k, v)| (k.clone(), v.clone())).collect();
        overlay.extend(self.record.range(from.to_vec()..to.to_vec()).map(|(k, v)| (k.clone(), v.clone())));
        let mut overlay = overlay.into_iter().peekable();

        let start = data_key(from);
        let end = data_key(to);
        let mut db_iter = self
            .db
            .iterator(IteratorMode::From(&start, Direction::Forward))
            .take_while(|item| item.as_ref().map_or(true, |(k, _)| k.as_ref() < end.as_slice()))
            .map(|item| item.map(|(k, v)| (k[1..].to_vec(), v.to_vec())))
            .peekable();

        let mut out = Vec::new();
        while out.len() < limit {
            let db_next = match db_iter.peek() {
                Some(Err(_)) => return Err(self.rocks(db_iter.next().unwrap().unwrap_err())),
                Some(Ok((k, _))) => Some(k.clone()),
                None => None,
            };
            let take_overlay = match (overlay.peek(), &db_next) {
                (None, None) => break,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (Some((ok, _)), Some(dk)) => ok <= dk,
            };
            if take_overlay {
                let (k, v) = overlay.next().unwrap();
                if db_next.as_ref() == Some(&k) {
                    db_iter.next(); // shadowed by the uncommitted write
                }
                if let Some(v) = v {
                    out.push((k, v));
                }
            } else {
                out.push(db_iter.next().unwrap().unwrap());
            }
        }
        Ok(out)
    }

    /// Ends the current record: its writes join the commit layer if it succeeded, vanish if not.
    pub(crate) fn end_record(&mut self, succeeded: bool) {
        if succeeded {
            // Not `BTreeMap::append`: it rebuilds the whole tree, which made every record cost
            // O(writes since the last commit). A record writes a handful of keys.
            for (k, v) in std::mem::take(&mut self.record) {
                self.commit.insert(k, v);
            }
        } else {
            self.record.clear();
        }
    }

    /// The current record's writes (key, value-or-tombstone), before it ends.
    pub(crate) fn record_writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.record.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The uncommitted writes, as changelog data records (key, value-or-tombstone).
    pub(crate) fn pending_writes(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.commit.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    /// The repair records of the next commit: the committed value (`None`: a tombstone) of every
    /// key a void attempt may have written to the changelog, unless the commit layer rewrites it
    /// anyway. See `repairs`.
    ///
    /// # Errors
    /// [`Error::Rocks`] when RocksDB fails.
    pub(crate) fn repair_writes(&self) -> Result<Writes, Error> {
        self.repairs.iter().filter(|k| !self.commit.contains_key(*k)).map(|k| Ok((k.clone(), self.db_get(&data_key(k))?))).collect()
    }

    /// Persists the commit layer after the commit it belongs to succeeded: state, the next
    /// changelog offset to restore from and the new position, in one `WriteBatch`.
    ///
    /// # Errors
    /// [`Error::Rocks`]; the commit layer is then kept, and the task is treated as corrupted.
    pub(crate) fn persist_commit(&mut self, next_changelog_offset: Option<i64>, position: &Position, commit: u64) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        for (k, v) in &self.commit {
            match v {
                Some(v) => batch.put(data_key(k), v),
                None => batch.delete(data_key(k)),
            }
        }
        let checkpoint = next_changelog_offset.or(self.checkpoint);
        let now = crate::runtime::now_ms();
        if let Some(c) = checkpoint {
            batch.put(META_CHECKPOINT, c.to_be_bytes());
            batch.put(META_CHECKPOINT_AT, now.to_be_bytes());
        }
        batch.put(META_POSITION, position.encode());
        batch.put(META_COMMIT, commit.to_be_bytes());
        self.write(batch)?;
        if checkpoint.is_some() {
            self.checkpoint_at = Some(now);
        }
        let mut cache = self.cache.borrow_mut();
        for (k, v) in std::mem::take(&mut self.commit) {
            cache.put(k, v);
        }
        drop(cache);
        self.repairs.clear();
        self.checkpoint = checkpoint;
        self.position = position.clone();
        self.last_commit = Some(commit);
        Ok(())
    }

    /// Drops every uncommitted write: the store is back to its committed contents. The dropped
    /// keys may already be in the changelog (an aborted transaction on a broker that shows it, a
    /// flushed at-least-once attempt), so the next commit repairs them.
    pub(crate) fn rollback(&mut self) {
        self.record.clear();
        self.repairs.extend(std::mem::take(&mut self.commit).into_keys());
    }

    /// Applies changelog records read during restoration. At each position marker, all data held
    /// back since the previous marker is applied, in log order; one `WriteBatch`, with the
    /// checkpoint after the marker. Data after the last marker waits for [`Store::finish_restore`].
    ///
    /// Why all of it, whatever commit it carries: once the log cleaner has run, the markers of
    /// older commits are gone (they share one key), so data of commit 1 stands before the marker
    /// of commit 2 and must be applied there. Data of an attempt that never completed can stand
    /// there too, but never as the last record of its key: the commit after it repaired every
    /// key it wrote (see `repairs`), and that repair comes later in the log.
    ///
    /// # Errors
    /// [`Error::Corrupt`] for an unreadable position marker, [`Error::Rocks`].
    pub(crate) fn restore(&mut self, entries: impl IntoIterator<Item = ChangelogEntry>) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        let mut applied_to = None;
        for e in entries {
            if e.is_marker && e.key == RESET_KEY {
                // A replay voided everything before: start from an empty store.
                self.unmarked.clear();
                batch.delete_range(vec![DATA], vec![DATA + 1]);
                self.position = Position::default();
                self.last_commit = None;
                applied_to = Some(e.offset + 1);
                continue;
            }
            if !(e.is_marker && e.key == MARKER_KEY) {
                self.unmarked.push(e);
                continue;
            }
            let p =
                e.value.as_deref().map(Position::decode).transpose().map_err(|err| self.corrupt("position marker", &err.to_string()))?;
            for d in self.unmarked.drain(..) {
                put_entry(&mut batch, &d);
            }
            if let Some(p) = p {
                self.position.merge(&p);
            }
            self.last_commit = e.commit;
            applied_to = Some(e.offset + 1);
        }
        if let Some(next) = applied_to {
            self.write_restored(batch, next)?;
        }
        Ok(())
    }

    /// Ends a restoration. `vouched`: the commit of the task's furthest marker, when this store's
    /// own marker for it was lost (at-least-once writes all of a commit's data before any marker,
    /// so a marker in another store vouches for it). Held-back data of that commit is applied; the
    /// rest belongs to attempts that never completed, whose inputs are processed again: their keys
    /// are repaired by the next commit.
    ///
    /// # Errors
    /// [`Error::Rocks`].
    pub(crate) fn finish_restore(&mut self, vouched: Option<u64>) -> Result<(), Error> {
        let unmarked = std::mem::take(&mut self.unmarked);
        let mut batch = WriteBatch::default();
        let mut last = None;
        for d in unmarked {
            if vouched.is_some() && d.commit == vouched {
                put_entry(&mut batch, &d);
                last = Some(d.offset);
            } else {
                self.repairs.insert(d.key);
            }
        }
        match last {
            Some(offset) => self.write_restored(batch, offset + 1),
            None => Ok(()),
        }
    }

    fn write_restored(&mut self, mut batch: WriteBatch, next: i64) -> Result<(), Error> {
        self.cache.borrow_mut().clear();
        // A restore stopped half-way is only as fresh as the state it started from: its
        // checkpoint keeps the old time (none: the epoch) until the restore is caught up.
        let at = self.checkpoint_at.unwrap_or(0);
        batch.put(META_CHECKPOINT, next.to_be_bytes());
        batch.put(META_CHECKPOINT_AT, at.to_be_bytes());
        batch.put(META_POSITION, self.position.encode());
        if let Some(c) = self.last_commit {
            batch.put(META_COMMIT, c.to_be_bytes());
        }
        self.write(batch)?;
        self.checkpoint = Some(next);
        self.checkpoint_at = Some(at);
        Ok(())
    }

    /// The restore reached the changelog's end: the checkpoint is as fresh as now.
    ///
    /// # Errors
    /// [`Error::Rocks`].
    pub(crate) fn caught_up(&mut self) -> Result<(), Error> {
        if self.checkpoint.is_none() {
            return Ok(());
        }
        let now = crate::runtime::now_ms();
        let mut batch = WriteBatch::default();
        batch.put(META_CHECKPOINT_AT, now.to_be_bytes());
        self.write(batch)?;
        self.checkpoint_at = Some(now);
        Ok(())
    }

    /// Deletes all local data of this store (task-corrupted): it is restored from the beginning.
    ///
    /// # Errors
    /// [`Error::Rocks`] / [`Error::Io`].
    pub(crate) fn wipe(&mut self) -> Result<(), Error> {
        let mut batch = WriteBatch::default();
        // Every key keyflow writes starts with `d` or `m`, so this range is the whole store.
        batch.delete_range(&[0u8][..], &[0xFFu8][..]);
        batch.put(META_FORMAT, FORMAT_VERSION);
        self.write(batch)?;
        self.cache.borrow_mut().clear();
        self.record.clear();
        self.commit.clear();
        self.repairs.clear();
        self.unmarked.clear();
        self.last_commit = None;
        self.checkpoint = None;
        self.checkpoint_at = None;
        self.position = Position::default();
        Ok(())
    }

    /// RocksDB's estimate of the number of keys (for metrics).
    pub fn estimated_keys(&self) -> u64 {
        self.db.property_int_value("rocksdb.estimate-num-keys").ok().flatten().unwrap_or(0)
    }

    fn write(&self, batch: WriteBatch) -> Result<(), Error> {
        // No fsync per commit: the changelog, not the local disk, is the durable copy. The WAL
        // still keeps each batch atomic across a process crash. (Without the WAL, as Kafka
        // Streams runs, a commit and a restore cost ~5% less, but every close must flush the
        // memtables to a new file: the crash-injection suite, which closes stores thousands of
        // times, ran 20x slower.)
        let mut opts = WriteOptions::default();
        opts.set_sync(false);
        self.db.write_opt(batch, &opts).map_err(|e| self.rocks(e))
    }

    fn db_get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.db.get(key).map_err(|e| self.rocks(e))
    }

    fn check_key(&self, key: &[u8]) -> Result<(), Error> {
        if key.first() == Some(&0xFF) {
            return Err(Error::ReservedKey { store: self.name.clone() });
        }
        Ok(())
    }

    fn rocks(&self, source: rocksdb::Error) -> Error {
        Error::Rocks { store: self.name.clone(), source }
    }

    fn corrupt(&self, what: &'static str, detail: &str) -> Error {
        Error::Corrupt { store: self.name.clone(), what, detail: detail.to_owned() }
    }
}

fn put_entry(batch: &mut WriteBatch, e: &ChangelogEntry) {
    match &e.value {
        Some(v) => batch.put(data_key(&e.key), v),
        None => batch.delete(data_key(&e.key)),
    }
}

fn data_key(key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(DATA);
    k.extend_from_slice(key);
    k
}

#[cfg(test)]
mod tests;
