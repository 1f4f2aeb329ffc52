//! Durable per-key timers (SLA escalation), kept in a store of their own so they are changelogged,
//! restored and committed exactly like any other state.
//!
//! Key layout (prefixes never reused):
//! - `s` + kind + due (8 bytes, order-preserving) + node `\0` name `\0` key: the schedule, in
//!   firing order
//! - `i` + node `\0` name `\0` key -> kind + due: the index, to cancel or move a timer

use super::{Error, Store};

/// Which clock a timer follows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeKind {
    /// Wall-clock time: fires when the instance's clock passes `due`, even without input.
    WallClock,
    /// Stream time (the largest record timestamp the task has seen): fires as input advances it,
    /// so replays fire it at the same point in the data.
    StreamTime,
}

impl TimeKind {
    fn byte(self) -> u8 {
        match self {
            TimeKind::WallClock => b'w',
            TimeKind::StreamTime => b's',
        }
    }

    fn index(self) -> usize {
        match self {
            TimeKind::WallClock => 0,
            TimeKind::StreamTime => 1,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            b'w' => Some(TimeKind::WallClock),
            b's' => Some(TimeKind::StreamTime),
            _ => None,
        }
    }
}

/// A timer set by processor `node` for workflow instance `key`; `name` tells a processor's timers
/// apart (e.g. `escalate`). Setting a timer with the same (node, name, key) moves it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timer {
    pub node: String,
    pub name: String,
    pub key: String,
    pub kind: TimeKind,
    /// Milliseconds since the Unix epoch.
    pub due: i64,
}

/// The timers of one task.
#[derive(Debug)]
pub(crate) struct TimerStore {
    store: Store,
    /// Per clock, a time before which no timer is due (`i64::MIN`: unknown, scan). Checking it
    /// spares the per-record RocksDB seek, which otherwise wades through the tombstones every
    /// cancelled or moved timer leaves at the head of the schedule.
    earliest: [i64; 2],
    /// Per clock, the earliest due time scheduled since [`TimerStore::take_scheduled`] was last
    /// called: a timer that sets another one due already must be fired in order with the rest.
    scheduled: [Option<i64>; 2],
}

/// Name of the timer store; its changelog is `<application.id>-keyflow-timers-changelog`.
pub const TIMER_STORE: &str = "keyflow-timers";

impl TimerStore {
    pub fn new(store: Store) -> Self {
        Self { store, earliest: [i64::MIN; 2], scheduled: [None; 2] }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The store, to restore, wipe, roll back or persist it: what it holds may change, so the
    /// earliest-due bounds are forgotten.
    pub fn store_mut(&mut self) -> &mut Store {
        self.earliest = [i64::MIN; 2];
        &mut self.store
    }

    /// Ends the current record (see `Store::end_record`). The bounds stay valid: a dropped
    /// record can only remove timers, and a lower bound survives that.
    pub fn end_record(&mut self, succeeded: bool) {
        self.store.end_record(succeeded);
    }

    /// Sets (or moves) a timer.
    ///
    /// # Errors
    /// [`Error::Corrupt`] if a name contains a NUL byte; store errors.
    pub fn schedule(&mut self, timer: &Timer) -> Result<(), Error> {
        for part in [&timer.node, &timer.name] {
            if part.contains('\0') {
                return Err(Error::Corrupt { store: TIMER_STORE.into(), what: "timer name", detail: format!("{part:?} contains NUL") });
            }
        }
        self.cancel(&timer.node, &timer.name, &timer.key)?;
        let bound = &mut self.earliest[timer.kind.index()];
        *bound = (*bound).min(timer.due);
        let scheduled = &mut self.scheduled[timer.kind.index()];
        *scheduled = Some(scheduled.map_or(timer.due, |s| s.min(timer.due)));
        let id = id(&timer.node, &timer.name, &timer.key);
        let mut index_value = vec![timer.kind.byte()];
        index_value.extend_from_slice(&encode_time(timer.due));
        self.store.put(&schedule_key(timer.kind, timer.due, &id), b"")?;
        self.store.put(&index_key(&id), &index_value)
    }

    /// Cancels a timer; cancelling one that is not set is not an error.
    ///
    /// # Errors
    /// Store errors.
    pub fn cancel(&mut self, node: &str, name: &str, key: &str) -> Result<(), Error> {
        let id = id(node, name, key);
        let Some(v) = self.store.get(&index_key(&id))? else { return Ok(()) };
        let (kind, due) = decode_index(&v).ok_or_else(|| corrupt("timer index"))?;
        self.store.delete(&schedule_key(kind, due, &id))?;
        self.store.delete(&index_key(&id))
    }

    /// Removes `timer`'s schedule entry if the index does not point at it (a store damaged by
    /// hand or by a restore that missed a delete): it could never fire, and would be read as due
    /// for ever. Returns whether there was one. (A timer moved or cancelled by an earlier one of
    /// its batch has no entry left: nothing to remove.)
    ///
    /// # Errors
    /// Store errors, [`Error::Corrupt`].
    pub fn remove_orphan(&mut self, timer: &Timer) -> Result<bool, Error> {
        let id = id(&timer.node, &timer.name, &timer.key);
        let key = schedule_key(timer.kind, timer.due, &id);
        if self.is_scheduled(timer)? || self.store.get(&key)?.is_none() {
            return Ok(false);
        }
        self.store.delete(&key)?;
        Ok(true)
    }

    /// The earliest due time of `kind` scheduled since the last call, if any.
    pub fn take_scheduled(&mut self, kind: TimeKind) -> Option<i64> {
        self.scheduled[kind.index()].take()
    }

    /// Whether `timer` is still set for its time (not cancelled, not moved since it was read).
    ///
    /// # Errors
    /// Store errors, [`Error::Corrupt`].
    pub fn is_scheduled(&self, timer: &Timer) -> Result<bool, Error> {
        let Some(v) = self.store.get(&index_key(&id(&timer.node, &timer.name, &timer.key)))? else { return Ok(false) };
        let (kind, due) = decode_index(&v).ok_or_else(|| corrupt("timer index"))?;
        Ok(kind == timer.kind && due == timer.due)
    }

    /// Timers of `kind` due at or before `now`, earliest first, at most `limit`.
    ///
    /// # Errors
    /// Store errors, [`Error::Corrupt`].
    pub fn due(&mut self, kind: TimeKind, now: i64, limit: usize) -> Result<Vec<Timer>, Error> {
        if now < self.earliest[kind.index()] {
            return Ok(Vec::new());
        }
        let from = [b's', kind.byte()];
        let to = schedule_key(kind, now.saturating_add(1), &[]);
        let entries = self.store.range(&from, &to, limit)?;
        let due: Vec<Timer> =
            entries.into_iter().map(|(k, _)| decode_schedule(&k).ok_or_else(|| corrupt("timer schedule"))).collect::<Result<_, _>>()?;
        if due.len() < limit {
            // Everything due is in hand: learn when the next one is.
            let next = self.store.range(&to, &[b's', kind.byte() + 1], 1)?;
            let next = next.first().and_then(|(k, _)| decode_schedule(k)).map_or(i64::MAX, |t| t.due);
            self.earliest[kind.index()] = next.min(due.first().map_or(i64::MAX, |t| t.due));
        }
        Ok(due)
    }

    /// The earliest due time of `kind`, if any.
    #[cfg(test)]
    ///
    /// # Errors
    /// Store errors.
    pub fn next_due(&mut self, kind: TimeKind) -> Result<Option<i64>, Error> {
        Ok(self.due(kind, i64::MAX - 1, 1)?.first().map(|t| t.due))
    }
}

fn id(node: &str, name: &str, key: &str) -> Vec<u8> {
    format!("{node}\0{name}\0{key}").into_bytes()
}

/// Order-preserving encoding of a signed time: flip the sign bit, big-endian.
fn encode_time(t: i64) -> [u8; 8] {
    ((t as u64) ^ (1 << 63)).to_be_bytes()
}

fn decode_time(b: &[u8]) -> Option<i64> {
    Some((u64::from_be_bytes(b.try_into().ok()?) ^ (1 << 63)) as i64)
}

fn schedule_key(kind: TimeKind, due: i64, id: &[u8]) -> Vec<u8> {
    let mut k = vec![b's', kind.byte()];
    k.extend_from_slice(&encode_time(due));
    k.extend_from_slice(id);
    k
}

/// The key under which the timer store indexes `node`'s timer `name` for `key`: what an
/// interactive query of [`super::TIMER_STORE`] asks for, to show an instance's pending timers.
pub fn pending_key(node: &str, name: &str, key: &str) -> Vec<u8> {
    index_key(&id(node, name, key))
}

/// When a pending timer is due (ms), from the value stored under its [`pending_key`].
pub fn pending_due(value: &[u8]) -> Option<i64> {
    decode_index(value).map(|(_, due)| due)
}

fn index_key(id: &[u8]) -> Vec<u8> {
    let mut k = vec![b'i'];
    k.extend_from_slice(id);
    k
}

fn decode_index(v: &[u8]) -> Option<(TimeKind, i64)> {
    Some((TimeKind::from_byte(*v.first()?)?, decode_time(v.get(1..9)?)?))
}

fn decode_schedule(k: &[u8]) -> Option<Timer> {
    if k.first() != Some(&b's') {
        return None;
    }
    let kind = TimeKind::from_byte(*k.get(1)?)?;
    let due = decode_time(k.get(2..10)?)?;
    let id = std::str::from_utf8(k.get(10..)?).ok()?;
    let mut parts = id.splitn(3, '\0');
    let (node, name, key) = (parts.next()?, parts.next()?, parts.next()?);
    Some(Timer { node: node.into(), name: name.into(), key: key.into(), kind, due })
}

fn corrupt(what: &'static str) -> Error {
    Error::Corrupt { store: TIMER_STORE.into(), what, detail: "undecodable key".into() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(key: &str, kind: TimeKind, due: i64) -> Timer {
        Timer { node: "wf".into(), name: "escalate".into(), key: key.into(), kind, due }
    }

    #[test]
    fn timers_fire_in_due_order_per_clock_and_rescheduling_moves_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = TimerStore::new(Store::open(TIMER_STORE, dir.path(), &crate::state::StoreMemory::default()).unwrap());
        t.schedule(&timer("b", TimeKind::StreamTime, 200)).unwrap();
        t.schedule(&timer("a", TimeKind::StreamTime, -5)).unwrap();
        t.schedule(&timer("c", TimeKind::WallClock, 100)).unwrap();
        t.schedule(&timer("a", TimeKind::StreamTime, 150)).unwrap(); // moves a
        let due: Vec<_> = t.due(TimeKind::StreamTime, 1000, 10).unwrap().into_iter().map(|t| (t.key, t.due)).collect();
        assert_eq!(due, vec![("a".to_string(), 150), ("b".to_string(), 200)]);
        assert_eq!(t.due(TimeKind::StreamTime, 199, 10).unwrap().len(), 1);
        assert_eq!(t.next_due(TimeKind::WallClock).unwrap(), Some(100));
        t.cancel("wf", "escalate", "c").unwrap();
        assert_eq!(t.next_due(TimeKind::WallClock).unwrap(), None);
        t.cancel("wf", "escalate", "never-set").unwrap();
    }
}
