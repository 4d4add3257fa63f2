//! The time index of due work, shared by every queue that the scheduler drains (runs, mail):
//! id → not-before (ms since the epoch) for every item not finished, and the same set ordered
//! by (not-before, id). The scheduler reads the due items as a range and the next one due as the
//! first key after now, without walking the items that come due later (thousands while a far
//! side is down).

use std::collections::HashSet;
use std::ops::Bound;

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};

use super::{ReadError, WriteError, read_err, storage};

/// One queue's pair of tables.
pub(crate) struct DueIndex {
    /// id → not before.
    pending: TableDefinition<'static, u64, u64>,
    /// (not before, id) → ().
    by_time: TableDefinition<'static, (u64, u64), ()>,
}

/// What [`DueIndex::due`] found: the due ids and the earliest time one not yet due comes due.
pub type Due = (Vec<u64>, Option<u64>);

/// An item's place in the time index: (not before, id).
pub type DueKey = (u64, u64);

/// What the caller of [`DueIndex::due`] says about each due id, in turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// Return it.
    Take,
    /// Leave it out and look at the next.
    Pass,
    /// Leave it out and look no further.
    Stop,
}

/// An `admit` taking up to `limit` ids not in `skip`.
pub fn skipping(skip: &HashSet<u64>, limit: usize) -> impl FnMut(DueKey) -> Admit + '_ {
    let mut taken = 0;
    move |(_, id)| {
        if taken >= limit {
            Admit::Stop
        } else if skip.contains(&id) {
            Admit::Pass
        } else {
            taken += 1;
            Admit::Take
        }
    }
}

impl DueIndex {
    pub(crate) const fn new(pending: &'static str, by_time: &'static str) -> DueIndex {
        DueIndex {
            pending: TableDefinition::new(pending),
            by_time: TableDefinition::new(by_time),
        }
    }

    /// Creates both tables; builds the time index of a store written before it existed.
    pub(crate) fn init(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        let pending = txn.open_table(self.pending)?;
        let mut by_time = txn.open_table(self.by_time)?;
        if by_time.is_empty()? && !pending.is_empty()? {
            for entry in pending.iter()? {
                let (id, not_before) = entry?;
                by_time.insert((not_before.value(), id.value()), ())?;
            }
        }
        Ok(())
    }

    /// Puts `id` in the set at `not_before` (moving it if it was there).
    pub(crate) fn set(
        &self,
        txn: &WriteTransaction,
        id: u64,
        not_before: u64,
    ) -> Result<(), WriteError> {
        let mut pending = txn.open_table(self.pending).map_err(storage)?;
        let mut by_time = txn.open_table(self.by_time).map_err(storage)?;
        if let Some(old) = pending.insert(id, not_before).map_err(storage)? {
            by_time.remove((old.value(), id)).map_err(storage)?;
        }
        by_time.insert((not_before, id), ()).map_err(storage)?;
        Ok(())
    }

    /// Takes `id` out of the set (it is finished).
    pub(crate) fn unset(&self, txn: &WriteTransaction, id: u64) -> Result<(), WriteError> {
        let mut pending = txn.open_table(self.pending).map_err(storage)?;
        let mut by_time = txn.open_table(self.by_time).map_err(storage)?;
        if let Some(old) = pending.remove(id).map_err(storage)? {
            by_time.remove((old.value(), id)).map_err(storage)?;
        }
        Ok(())
    }

    /// Every id in the set, inside a write transaction (for pruning).
    pub(crate) fn ids_in(&self, txn: &WriteTransaction) -> Result<Vec<u64>, WriteError> {
        let pending = txn.open_table(self.pending).map_err(storage)?;
        let mut out = Vec::new();
        for entry in pending.iter().map_err(storage)? {
            out.push(entry.map_err(storage)?.0.value());
        }
        Ok(out)
    }

    /// Every id in the set with its not-before, by id.
    pub(crate) fn all(&self, txn: &ReadTransaction) -> Result<Vec<(u64, u64)>, ReadError> {
        let pending = match txn.open_table(self.pending) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut out = Vec::new();
        for entry in pending.iter().map_err(read_err)? {
            let (k, v) = entry.map_err(read_err)?;
            out.push((k.value(), v.value()));
        }
        Ok(out)
    }

    /// How many ids are in the set.
    pub(crate) fn count(&self, txn: &ReadTransaction) -> Result<u64, ReadError> {
        match txn.open_table(self.pending) {
            Ok(t) => t.len().map_err(read_err),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(read_err(e)),
        }
    }

    /// The ids due at `now` (earliest due first, then lowest id) that `admit` takes, asked about
    /// each in that order — from the start, or from just after `after` — until it says stop, and
    /// the earliest time an id not yet due comes due. Reads only the ids it asks about.
    pub(crate) fn due(
        &self,
        txn: &ReadTransaction,
        now: u64,
        after: Option<DueKey>,
        admit: &mut dyn FnMut(DueKey) -> Admit,
    ) -> Result<Due, ReadError> {
        let by_time = match txn.open_table(self.by_time) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok((Vec::new(), None)),
            Err(e) => return Err(read_err(e)),
        };
        let mut due = Vec::new();
        let upper = (now, u64::MAX);
        if after.is_none_or(|a| a < upper) {
            let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
            for entry in by_time
                .range::<DueKey>((lower, Bound::Included(upper)))
                .map_err(read_err)?
            {
                let (k, _) = entry.map_err(read_err)?;
                let key = k.value();
                match admit(key) {
                    Admit::Take => due.push(key.1),
                    Admit::Pass => {}
                    Admit::Stop => break,
                }
            }
        }
        let next = match now.checked_add(1) {
            Some(after) => by_time
                .range((after, 0)..)
                .map_err(read_err)?
                .next()
                .transpose()
                .map_err(read_err)?
                .map(|(k, _)| k.value().0),
            None => None,
        };
        Ok((due, next))
    }
}
