//! The instance's claim on its state directory: a lock, and the process id kept there.
//!
//! Under exactly-once the producer's `transactional.id` is `<application.id>-<process id>`. An
//! instance restarted on the same disk (after kill -9, say) must come back with the SAME id: its
//! first `init_transactions` then fences the dead process's producer and aborts the transaction
//! it left open at once. With a fresh id per start, that transaction would stay open until
//! `transaction.timeout.ms`, and every read_committed reader of its partitions (the restoring
//! instance itself, via the changelogs) would wait that long. Kafka Streams keeps its process id
//! in the state directory for the same reason.
//!
//! Two running instances on one directory would share the id and fence each other forever, and
//! could open the same task's stores: the directory is locked while an instance runs (the OS
//! releases the lock when the process dies, kill -9 included).

use std::fs::{File, TryLockError};
use std::io;
use std::path::Path;

const ID_FILE: &str = "process-id";
const LOCK_FILE: &str = ".lock";

/// An instance's hold on its state directory; the lock is released when this is dropped.
#[derive(Debug)]
pub struct StateDirLock {
    pub process_id: String,
    _lock: File,
}

#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    #[error("state directory {0} is in use by another running instance (each instance needs its own state.dir)")]
    InUse(String),
    #[error("state directory {path}: {source}")]
    Io { path: String, source: io::Error },
}

/// Locks `dir` (creating it) and reads its process id, creating one the first time.
pub fn claim(dir: &Path) -> Result<StateDirLock, ClaimError> {
    let io = |source| ClaimError::Io { path: dir.display().to_string(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let lock = File::options().create(true).truncate(false).write(true).open(dir.join(LOCK_FILE)).map_err(io)?;
    match lock.try_lock() {
        Ok(()) => {}
        Err(TryLockError::WouldBlock) => return Err(ClaimError::InUse(dir.display().to_string())),
        Err(TryLockError::Error(e)) => return Err(io(e)),
    }
    let process_id = read_or_create_id(dir).map_err(io)?;
    Ok(StateDirLock { process_id, _lock: lock })
}

fn read_or_create_id(dir: &Path) -> io::Result<String> {
    let path = dir.join(ID_FILE);
    match std::fs::read_to_string(&path) {
        Ok(id) if !id.trim().is_empty() => return Ok(id.trim().to_owned()),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let id = format!("{:016x}", rand::random::<u64>());
    // Written to a temporary file and renamed, so a crash never leaves a half-written id.
    let tmp = dir.join(format!("{ID_FILE}.tmp"));
    std::fs::write(&tmp, &id)?;
    std::fs::rename(&tmp, &path)?;
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_survives_a_restart_and_differs_between_disks() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let first = claim(&a.path().join("app")).unwrap().process_id;
        assert_eq!(claim(&a.path().join("app")).unwrap().process_id, first);
        assert_ne!(claim(&b.path().join("app")).unwrap().process_id, first);
        std::fs::write(a.path().join("app").join(ID_FILE), "").unwrap();
        assert_ne!(claim(&a.path().join("app")).unwrap().process_id, "", "an empty file gets a new id");
    }

    #[test]
    fn a_directory_is_claimed_by_one_instance_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let held = claim(dir.path()).unwrap();
        assert!(matches!(claim(dir.path()), Err(ClaimError::InUse(_))));
        drop(held);
        claim(dir.path()).expect("free again once the holder is gone");
    }
}
