//! A task's part in keeping every record writable: what a record would write is checked against
//! the topics' limits before its effects are kept (see `runtime::limits`), and dead letters are
//! cut to fit theirs.

use crate::dlq;
use crate::processor;
use crate::record::OutputRecord;

use super::super::collector::Collector;
use super::super::limits::wire_size;
use super::super::Error;
use super::{commit, Task};

impl Task {
    /// Refuses a record whose outputs or state writes could never be written (see
    /// `runtime::limits`): as a bad record, so it becomes a dead letter and its partition flows on.
    pub(super) fn check_limits(&self, outputs: &[OutputRecord]) -> Result<(), (String, processor::Error)> {
        for o in outputs {
            if let Err(e) = self.limits.check(o) {
                return Err((format!("sink:{}", o.topic), processor::Error::BadRecord(format!("output refused: {e}"))));
            }
        }
        let headers = commit::commit_headers(0); // what every changelog record carries
        for (name, topic) in &self.changelogs {
            let limit = self.limits.of(topic);
            let store = self.store(name).expect("changelogs name existing stores");
            for (key, value) in store.record_writes() {
                let size = wire_size(Some(key), value, &headers);
                if size > limit {
                    return Err((
                        format!("store:{name}"),
                        processor::Error::BadRecord(format!(
                            "transition refused: the new state of `{}` in store `{name}` would be {size} bytes, over the limit of \
                             {limit} bytes of its changelog `{topic}`",
                            String::from_utf8_lossy(key)
                        )),
                    ));
                }
            }
        }
        Ok(())
    }

    /// Sends a dead letter cut to fit the dead-letter topic (see [`dlq::fit`]).
    pub(super) fn send_dead_letter(&self, out: &mut Collector<'_>, letter: OutputRecord) -> Result<(), Error> {
        let limit = self.limits.of(&letter.topic);
        out.send(&dlq::fit(letter, limit))
    }
}
