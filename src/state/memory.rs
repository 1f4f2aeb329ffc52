//! One memory budget for every RocksDB store of an instance, as Kafka Streams users bound theirs
//! with a `rocksdb.config.setter` (its `BoundedMemoryRocksDBConfig`): a single LRU block cache
//! that the memtables of all stores are charged to, memtables at most half of it.
//!
//! Without it each store (two per task: its data and its timers) takes RocksDB's defaults, up to
//! two 64 MB memtables and a 32 MB block cache of its own, so memory grows with the partitions
//! an instance holds rather than with its data.

use rocksdb::{BlockBasedOptions, Cache, Options, WriteBufferManager};

/// The shared block cache and write-buffer manager; cloning shares them.
#[derive(Clone)]
pub struct StoreMemory {
    cache: Cache,
    write_buffers: WriteBufferManager,
}

impl std::fmt::Debug for StoreMemory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreMemory").field("cache_bytes", &self.cache.get_usage()).finish()
    }
}

impl StoreMemory {
    /// `state.rocksdb.memory.bytes`' default: 64 MiB per instance.
    pub const DEFAULT_BYTES: usize = 64 << 20;

    /// A budget of `bytes` for block cache and memtables together.
    pub fn new(bytes: usize) -> Self {
        let cache = Cache::new_lru_cache(bytes);
        // No stall: a writer over budget makes the largest memtable flush instead of waiting.
        let write_buffers = WriteBufferManager::new_write_buffer_manager_with_cache(bytes / 2, false, cache.clone());
        StoreMemory { cache, write_buffers }
    }

    /// Makes `opts` draw on this budget.
    pub(crate) fn apply(&self, opts: &mut Options) {
        let mut table = BlockBasedOptions::default();
        table.set_block_cache(&self.cache);
        // Index and filter blocks are charged to the cache too, not kept outside the budget.
        table.set_cache_index_and_filter_blocks(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        opts.set_block_based_table_factory(&table);
        opts.set_write_buffer_manager(&self.write_buffers);
    }
}

impl Default for StoreMemory {
    fn default() -> Self {
        StoreMemory::new(StoreMemory::DEFAULT_BYTES)
    }
}
