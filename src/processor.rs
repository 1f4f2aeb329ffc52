//! The Processor API: what a topology node implements, and the narrow context it is handed.
//!
//! A processor can read and write the stores it was connected to, forward records downstream,
//! set and cancel durable timers, and read the metadata of the input being processed. It cannot
//! reach the consumer, the producer or another task: everything it does is part of the task's
//! next commit.

use std::collections::HashMap;

use serde::{de::DeserializeOwned, Serialize};

use crate::record::{Record, RecordMetadata};
use crate::state::{self, Store, TimeKind, Timer, TimerStore};

/// Errors a processor returns, typed by what the runtime does about them.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// This record cannot be processed (bad content, an event that fits no rule): it goes to the
    /// dead-letter topic with this reason, and the partition moves on.
    #[error("{0}")]
    BadRecord(String),
    /// The local state failed: the task is corrupted and restored from its changelog.
    #[error(transparent)]
    State(#[from] state::Error),
    /// A programming error in the topology (e.g. a store that is not connected): the instance stops.
    #[error("topology error: {0}")]
    Topology(String),
    /// A transient failure outside the record (the schema registry or a service is unavailable):
    /// nothing of this attempt is kept, and the record is processed again after a backoff.
    #[error("transient: {0}")]
    Retry(String),
    /// A transient failure after which the processor knows how long to wait: a retry policy's
    /// next backoff, a circuit breaker's open period, a service's `Retry-After`. As [`Error::Retry`],
    /// but the partition resumes after `after` instead of the runtime's own backoff.
    #[error("transient: {reason} (retry in {after:?})")]
    Backoff { reason: String, after: std::time::Duration },
}

/// A user processor. One instance is created per task (input partition), so it may keep caches,
/// but everything that must survive a restart or a rebalance belongs in a store.
pub trait Processor: Send {
    /// Processes one record. Its writes, forwards and timers take effect only if it returns `Ok`.
    ///
    /// # Errors
    /// See [`Error`].
    fn process(&mut self, ctx: &mut Context<'_>, record: Record) -> Result<(), Error>;

    /// Called when a timer this processor set is due; the timer is already removed.
    ///
    /// # Errors
    /// See [`Error`].
    fn on_timer(&mut self, ctx: &mut Context<'_>, timer: Timer) -> Result<(), Error> {
        let _ = (ctx, timer);
        Ok(())
    }
}

/// Makes a fresh processor for each task.
pub type ProcessorSupplier = std::sync::Arc<dyn Fn() -> Box<dyn Processor> + Send + Sync>;

/// Records a processor forwarded: `(child name or all children, record)`.
pub(crate) type Forwarded = Vec<(Option<String>, Record)>;

/// What a processor sees of its task.
pub struct Context<'a> {
    pub(crate) node: &'a str,
    pub(crate) metadata: &'a RecordMetadata,
    pub(crate) stores: &'a mut HashMap<String, Store>,
    pub(crate) connected: &'a [String],
    pub(crate) timers: &'a mut TimerStore,
    pub(crate) forwarded: &'a mut Forwarded,
    pub(crate) wall_clock: i64,
    pub(crate) stream_time: i64,
    pub(crate) application_id: &'a str,
}

impl Context<'_> {
    /// The store `name`, if this processor is connected to it.
    ///
    /// # Errors
    /// [`Error::Topology`] when the store is not connected to this processor.
    pub fn store(&mut self, name: &str) -> Result<&mut Store, Error> {
        if !self.connected.iter().any(|s| s == name) {
            return Err(Error::Topology(format!("processor `{}` is not connected to store `{name}`", self.node)));
        }
        self.stores.get_mut(name).ok_or_else(|| Error::Topology(format!("store `{name}` does not exist")))
    }

    /// Reads a JSON value from store `store`.
    ///
    /// # Errors
    /// As [`Context::store`]; [`Error::State`] when the stored bytes are not the expected JSON.
    pub fn get_json<T: DeserializeOwned>(&mut self, store: &str, key: &str) -> Result<Option<T>, Error> {
        let bytes = self.store(store)?.get(key.as_bytes())?;
        bytes
            .map(|b| serde_json::from_slice(&b))
            .transpose()
            .map_err(|e| Error::State(state::Error::Corrupt { store: store.into(), what: "JSON value", detail: e.to_string() }))
    }

    /// Writes a JSON value to store `store`.
    ///
    /// # Errors
    /// As [`Context::store`].
    pub fn put_json<T: Serialize>(&mut self, store: &str, key: &str, value: &T) -> Result<(), Error> {
        let bytes = serde_json::to_vec(value).map_err(|e| Error::BadRecord(format!("cannot encode state: {e}")))?;
        Ok(self.store(store)?.put(key.as_bytes(), &bytes)?)
    }

    /// Sends `record` to every child of this node.
    pub fn forward(&mut self, record: Record) {
        self.forwarded.push((None, record));
    }

    /// Sends `record` to the child named `child` only.
    pub fn forward_to(&mut self, child: &str, record: Record) {
        self.forwarded.push((Some(child.to_owned()), record));
    }

    /// Sets (or moves) this processor's timer `name` for instance `key`.
    ///
    /// # Errors
    /// [`Error::State`].
    pub fn schedule(&mut self, name: &str, key: &str, kind: TimeKind, due: i64) -> Result<(), Error> {
        let timer = Timer { node: self.node.to_owned(), name: name.to_owned(), key: key.to_owned(), kind, due };
        Ok(self.timers.schedule(&timer)?)
    }

    /// Cancels this processor's timer `name` for instance `key`, if set.
    ///
    /// # Errors
    /// [`Error::State`].
    pub fn cancel_timer(&mut self, name: &str, key: &str) -> Result<(), Error> {
        Ok(self.timers.cancel(self.node, name, key)?)
    }

    /// Where the input being processed came from.
    pub fn metadata(&self) -> &RecordMetadata {
        self.metadata
    }

    /// The application (consumer group, `application.id`) the task belongs to, as Kafka Streams'
    /// `ProcessorContext.applicationId()`.
    pub fn application_id(&self) -> &str {
        self.application_id
    }

    /// The instance's wall-clock time (controllable in the test driver), ms since the epoch.
    pub fn wall_clock_time(&self) -> i64 {
        self.wall_clock
    }

    /// The task's stream time: the largest record timestamp it has seen.
    pub fn stream_time(&self) -> i64 {
        self.stream_time
    }
}
