//! The record collector: the only way a record leaves a task. Under exactly-once it opens the
//! instance's transaction on the first record, so every output, dead letter and changelog write
//! lands inside it.

use crate::record::OutputRecord;

use super::log::Log;
use super::{Error, Guarantee};

/// Whether the instance's producer has a transaction open.
#[derive(Debug)]
pub(crate) struct Transaction {
    guarantee: Guarantee,
    open: bool,
}

impl Transaction {
    pub fn new(guarantee: Guarantee) -> Self {
        Self { guarantee, open: false }
    }

    pub fn guarantee(&self) -> Guarantee {
        self.guarantee
    }

    pub fn is_open(&self) -> bool {
        self.open
    }

    /// Opens the transaction if exactly-once and not yet open.
    pub fn ensure_open(&mut self, log: &mut dyn Log) -> Result<(), Error> {
        if self.guarantee == Guarantee::ExactlyOnceV2 && !self.open {
            log.begin_transaction()?;
            self.open = true;
        }
        Ok(())
    }

    /// The transaction ended (committed or aborted).
    pub fn closed(&mut self) {
        self.open = false;
    }
}

pub(crate) struct Collector<'a> {
    log: &'a mut dyn Log,
    txn: &'a mut Transaction,
}

impl<'a> Collector<'a> {
    pub fn new(log: &'a mut dyn Log, txn: &'a mut Transaction) -> Self {
        Self { log, txn }
    }

    pub fn send(&mut self, record: &OutputRecord) -> Result<(), Error> {
        self.txn.ensure_open(self.log)?;
        self.log.send(record)
    }
}
