//! Deduplication by envelope `eventId` and event `uuid` across restarts and store upgrades: the
//! in-memory index is rebuilt from what the store holds.

use engine::store::{CommitMode, DB_FILE, DEDUP_SEAL_AT, Store};
use engine::util::now_ms;
use redb::{ReadableDatabase, TableHandle};

use crate::support::*;

#[tokio::test]
async fn duplicates_are_recognised_after_a_restart() {
    let dir = temp_dir();
    let uuids = vec!["u-1".to_string(), "u-2".to_string()];
    {
        let store = Store::open(dir.path(), CommitMode::Group).unwrap();
        let s = deliver(&store, envelope_with("d-1", &uuids), now_ms()).await;
        assert_eq!(s.events, 2);
        store.close();
    }
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    assert_eq!(store.dedup_len(), (1, 2));
    let again = deliver(&store, envelope_with("d-1", &uuids), now_ms()).await;
    assert!(again.duplicate_delivery, "{again:?}");
    let resent = deliver(
        &store,
        envelope_with("d-2", &["u-2".to_string(), "u-3".to_string()]),
        now_ms(),
    )
    .await;
    assert_eq!((resent.events, resent.duplicate_events), (1, 1));
    assert_eq!(store.history().recent_events(10).unwrap().len(), 3);
    let by_uuid = store.history().event_by_uuid("u-2").unwrap().unwrap();
    assert_eq!(by_uuid.seq, 2);
    assert!(store.history().event_by_uuid("u-404").unwrap().is_none());
}

/// A store written before the in-memory index kept its keys in `delivery_ids` / `event_uuids`
/// tables; opening it moves the delivery ids into `delivery_keys` and drops both tables.
#[tokio::test]
async fn a_store_with_the_old_key_tables_keeps_its_duplicates() {
    let dir = temp_dir();
    {
        let store = Store::open(dir.path(), CommitMode::Group).unwrap();
        deliver(
            &store,
            envelope_with("old-delivery", &["old-uuid".to_string()]),
            now_ms(),
        )
        .await;
        store.close();
    }
    // Rewrite the file the way an older engine left it.
    {
        let ids: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("delivery_ids");
        let uuids: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("event_uuids");
        let keys: redb::TableDefinition<u64, &str> = redb::TableDefinition::new("delivery_keys");
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.delete_table(keys).unwrap();
        txn.open_table(ids)
            .unwrap()
            .insert("old-delivery", 1)
            .unwrap();
        txn.open_table(uuids)
            .unwrap()
            .insert("old-uuid", 1)
            .unwrap();
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    assert_eq!(store.dedup_len(), (1, 1));
    let again = deliver(
        &store,
        envelope_with("old-delivery", &["old-uuid".to_string()]),
        now_ms(),
    )
    .await;
    assert!(again.duplicate_delivery);
    let other = deliver(
        &store,
        envelope_with("new-delivery", &["old-uuid".to_string()]),
        now_ms(),
    )
    .await;
    assert_eq!((other.events, other.duplicate_events), (0, 1));
    store.close();
    let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
    let names: Vec<String> = db
        .begin_read()
        .unwrap()
        .list_tables()
        .unwrap()
        .map(|t| t.name().to_string())
        .collect();
    assert!(!names.contains(&"delivery_ids".to_string()), "{names:?}");
    assert!(!names.contains(&"event_uuids".to_string()), "{names:?}");
}

/// Stores `n` events (uuids `{prefix}-{i}`) in deliveries of 500, each with its own eventId.
async fn store_many(store: &Store, prefix: &str, n: usize) {
    let uuids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i}")).collect();
    for (d, chunk) in uuids.chunks(500).enumerate() {
        let s = deliver(
            store,
            envelope_with(&format!("{prefix}-d{d}"), chunk),
            now_ms(),
        )
        .await;
        assert_eq!(s.events, chunk.len());
    }
}

/// Issue "Throughput and memory that hold with a month of history": with more history than the
/// index keeps in memory, keys sealed into runs on disk are still duplicates after a restart
/// (the oldest run, a middle one, the live tail), and new keys are not.
#[tokio::test]
async fn a_resent_event_is_a_duplicate_after_a_restart_with_a_large_store() {
    let dir = temp_dir();
    let n = DEDUP_SEAL_AT * 2 + 1000;
    {
        let store = Store::open(dir.path(), CommitMode::Group).unwrap();
        store_many(&store, "big", n).await;
        store.close();
    }
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let (live, runs, _) = store.dedup_shape();
    assert_eq!(runs, 2, "two runs sealed");
    assert!(live < DEDUP_SEAL_AT, "live part bounded: {live}");
    assert_eq!(store.dedup_len().1, n);
    for i in [0, 1, DEDUP_SEAL_AT / 2, DEDUP_SEAL_AT + 7, n - 1] {
        let uuid = format!("big-{i}");
        assert!(store.has_event(&uuid).unwrap(), "{uuid}");
        let again = deliver(
            &store,
            envelope_with(&format!("resend-{i}"), &[uuid.clone(), format!("new-{i}")]),
            now_ms(),
        )
        .await;
        assert_eq!((again.events, again.duplicate_events), (1, 1), "{uuid}");
    }
    // A re-sent delivery (same eventId) from the first run is a duplicate as a whole.
    let first = deliver(
        &store,
        envelope_with("big-d0", &["x".to_string()]),
        now_ms(),
    )
    .await;
    assert!(first.duplicate_delivery);
    assert!(!store.has_event("never-stored").unwrap());
    store.close();
}

/// A store written before the sealed runs (every key only in `events` / `delivery_keys`) is
/// sealed when it is opened, and keeps every duplicate.
#[tokio::test]
async fn a_store_without_dedup_runs_is_sealed_when_opened() {
    let dir = temp_dir();
    let n = DEDUP_SEAL_AT + 1000;
    {
        let store = Store::open(dir.path(), CommitMode::Group).unwrap();
        store_many(&store, "old", n).await;
        store.close();
    }
    {
        let db = redb::Database::create(dir.path().join(DB_FILE)).unwrap();
        let txn = db.begin_write().unwrap();
        for name in ["dedup_runs", "dedup_sealed"] {
            let t: redb::TableDefinition<(), ()> = redb::TableDefinition::new(name);
            assert!(txn.delete_table(t).unwrap(), "{name} existed");
        }
        txn.commit().unwrap();
    }
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let (live, runs, _) = store.dedup_shape();
    assert_eq!((live, runs), (1000, 1));
    for i in [0, n / 2, n - 1] {
        assert!(store.has_event(&format!("old-{i}")).unwrap());
    }
    let again = deliver(&store, envelope_with("x", &["old-3".to_string()]), now_ms()).await;
    assert_eq!(again.duplicate_events, 1);
    store.close();
}

/// Issue 15: one event by uuid goes through the dedup index in the server: events sealed into a
/// run on disk (the oldest, one from the middle of the run, the run's last) and live ones are
/// found, with the seq the scan of the events finds; an unknown uuid is `None`.
#[tokio::test]
async fn event_by_uuid_finds_sealed_and_live_events_through_the_index() {
    let dir = temp_dir();
    let n = DEDUP_SEAL_AT + 1000;
    {
        let store = Store::open(dir.path(), CommitMode::Group).unwrap();
        store_many(&store, "ix", n).await;
        store.close();
    }
    let store = Store::open(dir.path(), CommitMode::Group).unwrap();
    let (live, runs, _) = store.dedup_shape();
    assert_eq!(runs, 1, "one run sealed");
    assert!(live > 0, "a live tail");
    let history = store.history();
    for i in [
        0,
        1,
        DEDUP_SEAL_AT / 2,
        DEDUP_SEAL_AT - 1,
        DEDUP_SEAL_AT + 7,
        n - 1,
    ] {
        let uuid = format!("ix-{i}");
        let e = history.event_by_uuid(&uuid).unwrap().expect(&uuid);
        assert_eq!(e.uuid, uuid);
        assert_eq!(
            Some(e.seq),
            history.scanned_event_seq(&uuid).unwrap(),
            "{uuid}"
        );
    }
    for unknown in ["never-stored", "ix-", &format!("ix-{n}")] {
        assert!(
            history.event_by_uuid(unknown).unwrap().is_none(),
            "{unknown}"
        );
    }
    store.close();
}
