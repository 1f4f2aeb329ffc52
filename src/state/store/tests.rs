use super::*;

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open("s", &dir.path().join("s"), &StoreMemory::default()).unwrap();
    (dir, store)
}

#[test]
fn failed_record_leaves_no_trace_and_rollback_restores_committed_contents() {
    let (_d, mut s) = open();
    s.put(b"a", b"1").unwrap();
    s.end_record(true);
    s.persist_commit(Some(1), &Position::default(), 1).unwrap();
    s.put(b"a", b"2").unwrap();
    assert_eq!(s.get(b"a").unwrap().unwrap(), b"2");
    s.end_record(false);
    assert_eq!(s.get(b"a").unwrap().unwrap(), b"1");
    s.delete(b"a").unwrap();
    s.end_record(true);
    assert_eq!(s.get(b"a").unwrap(), None);
    s.rollback();
    assert_eq!(s.get(b"a").unwrap().unwrap(), b"1");
}

#[test]
fn range_merges_uncommitted_writes_and_deletes_in_key_order() {
    let (_d, mut s) = open();
    for k in [b"k1", b"k3", b"k5"] {
        s.put(k, k).unwrap();
    }
    s.end_record(true);
    s.persist_commit(Some(3), &Position::default(), 1).unwrap();
    s.put(b"k2", b"new").unwrap();
    s.delete(b"k3").unwrap();
    s.put(b"k5", b"changed").unwrap();
    s.put(b"z", b"outside").unwrap();
    let got = s.range(b"k", b"l", 10).unwrap();
    let got: Vec<_> = got.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
    assert_eq!(got, vec![(&b"k1"[..], &b"k1"[..]), (b"k2", b"new"), (b"k5", b"changed")]);
    assert_eq!(s.range(b"k", b"l", 2).unwrap().len(), 2);
}

#[test]
fn committed_state_checkpoint_and_position_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let mut position = Position::default();
    position.applied.insert("in".into(), 41);
    {
        let mut s = Store::open("s", &path, &StoreMemory::default()).unwrap();
        s.put(b"a", b"1").unwrap();
        s.end_record(true);
        s.persist_commit(Some(7), &position, 1).unwrap();
        s.put(b"b", b"uncommitted").unwrap();
        s.end_record(true);
    }
    let s = Store::open("s", &path, &StoreMemory::default()).unwrap();
    assert_eq!(s.get(b"a").unwrap().unwrap(), b"1");
    assert_eq!(s.get(b"b").unwrap(), None);
    assert_eq!(s.checkpoint(), Some(7));
    assert!(s.checkpoint_age().is_some_and(|age| age < std::time::Duration::from_secs(60)), "when it was written survives too");
    assert!(s.position().has_applied("in", 41));
    assert!(!s.position().has_applied("in", 42));
}

fn data(offset: i64, key: &[u8], commit: u64) -> ChangelogEntry {
    ChangelogEntry { offset, key: key.to_vec(), value: Some(b"v".to_vec()), is_marker: false, commit: Some(commit) }
}

fn delete(offset: i64, key: &[u8], commit: u64) -> ChangelogEntry {
    ChangelogEntry { value: None, ..data(offset, key, commit) }
}

fn marker(offset: i64, p: &Position, commit: u64) -> ChangelogEntry {
    ChangelogEntry { offset, key: MARKER_KEY.to_vec(), value: Some(p.encode()), is_marker: true, commit: Some(commit) }
}

#[test]
fn restore_applies_each_commit_at_its_marker_and_drops_broken_attempts() {
    let (_d, mut s) = open();
    let mut p = Position::default();
    p.applied.insert("in".into(), 9);
    p.stream_time = 1000;
    s.restore([
        data(0, b"a", 1),
        delete(1, b"a", 1),
        data(2, b"b", 1),
        marker(3, &p, 1),
        data(4, b"broken", 2),   // attempt 2 crashed before its marker...
        delete(5, b"broken", 3), // ...so commit 3 repaired the key it wrote
        data(6, b"c", 3),
        marker(7, &p, 3),
    ])
    .unwrap();
    assert_eq!(s.get(b"a").unwrap(), None);
    assert!(s.get(b"b").unwrap().is_some());
    assert!(s.get(b"c").unwrap().is_some());
    assert_eq!(s.get(b"broken").unwrap(), None);
    assert_eq!(s.checkpoint(), Some(8));
    assert_eq!(s.position(), &p);
    assert!(matches!(s.put(b"\xffx", b"v"), Err(Error::ReservedKey { .. })));
}

#[test]
fn restore_after_compaction_keeps_keys_whose_commit_lost_its_marker() {
    // The log cleaner kept only the newest marker: `a` was last written by commit 1, whose
    // marker is gone. It is committed state all the same.
    let (_d, mut s) = open();
    let mut p = Position::default();
    p.applied.insert("in".into(), 9);
    s.restore([data(0, b"a", 1), data(2, b"b", 2), marker(3, &p, 2)]).unwrap();
    s.finish_restore(None).unwrap();
    assert!(s.get(b"a").unwrap().is_some(), "a key of an older commit survives compaction");
    assert!(s.get(b"b").unwrap().is_some());
    assert_eq!(s.position(), &p);
}

#[test]
fn void_attempts_are_repaired_by_the_next_commit() {
    let (_d, mut s) = open();
    s.put(b"kept", b"1").unwrap();
    s.end_record(true);
    s.persist_commit(Some(2), &Position::default(), 1).unwrap();
    // A restore drops an unfinished attempt's tail; a rollback drops the commit layer.
    s.restore([data(2, b"tail", 7)]).unwrap();
    s.finish_restore(None).unwrap();
    s.put(b"kept", b"2").unwrap();
    s.put(b"rolled-back", b"x").unwrap();
    s.end_record(true);
    s.rollback();
    let repairs = s.repair_writes().unwrap();
    assert_eq!(repairs, vec![(b"kept".to_vec(), Some(b"1".to_vec())), (b"rolled-back".to_vec(), None), (b"tail".to_vec(), None)]);
    // A key the next commit writes anyway needs no repair; a commit clears them.
    s.put(b"tail", b"new").unwrap();
    s.end_record(true);
    assert_eq!(s.repair_writes().unwrap().len(), 2);
    s.persist_commit(Some(9), &Position::default(), 8).unwrap();
    assert!(s.repair_writes().unwrap().is_empty());
}

#[test]
fn a_reset_marker_voids_everything_restored_before_it_even_across_restore_batches() {
    let (_d, mut s) = open();
    let mut before = Position::default();
    before.applied.insert("in".into(), 50);
    s.restore([data(0, b"old", 1), marker(1, &before, 1)]).unwrap();
    assert!(s.get(b"old").unwrap().is_some());
    let reset = ChangelogEntry { offset: 2, key: RESET_KEY.to_vec(), value: None, is_marker: true, commit: None };
    let mut after = Position::default();
    after.applied.insert("in".into(), 3);
    // Held-back data of an unfinished commit is voided too.
    s.restore([data(3, b"unfinished", 2), reset, data(4, b"new", 3), marker(5, &after, 3)]).unwrap();
    assert_eq!(s.get(b"old").unwrap(), None);
    assert_eq!(s.get(b"unfinished").unwrap(), None);
    assert!(s.get(b"new").unwrap().is_some());
    assert_eq!(s.position(), &after, "the position starts again: replayed inputs are applied, not skipped");
    assert_eq!(s.checkpoint(), Some(6));
}

#[test]
fn data_after_the_last_marker_is_applied_only_when_another_store_vouches_for_its_commit() {
    for vouched in [None, Some(2), Some(9)] {
        let (_d, mut s) = open();
        s.restore([data(0, b"a", 1), marker(1, &Position::default(), 1), data(2, b"b", 2)]).unwrap();
        assert_eq!(s.checkpoint(), Some(2));
        assert!(s.get(b"b").unwrap().is_none());
        s.finish_restore(vouched).unwrap();
        assert!(s.get(b"a").unwrap().is_some());
        assert_eq!(s.get(b"b").unwrap().is_some(), vouched == Some(2));
        assert_eq!(s.checkpoint(), Some(if vouched == Some(2) { 3 } else { 2 }));
    }
}
