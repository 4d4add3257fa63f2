//! Deduplication by envelope `eventId` and event `uuid` across restarts and store upgrades: the
//! in-memory index is rebuilt from what the store holds.

use engine::store::{CommitMode, DB_FILE, Store};
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
