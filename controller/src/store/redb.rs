//! The [`Store`] on redb, the default engine.
//!
//! One file; each [`Table`] is a redb table of `&[u8]` to `&[u8]` with the table's name. A
//! [`Batch`] is one write transaction committed with [`Durability::Immediate`], which redb
//! documents as "guaranteed to be persistent as soon as `commit` returns": redb writes the new
//! tree and the inactive commit slot, flips the primary bit, then fsyncs; after a crash it opens
//! the newest commit slot whose checksum is valid. redb allows one write transaction at a time,
//! so reading a batch's preconditions inside its write transaction makes check-and-write
//! serializable with every other commit.

use std::path::{Path, PathBuf};

use ::redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Batch, Entry, Error, Op, Store, Table};

/// The redb table behind `table`.
fn definition(table: Table) -> TableDefinition<'static, &'static [u8], &'static [u8]> {
    TableDefinition::new(table.name())
}

/// A [`Store`] in one redb file.
#[derive(Debug)]
pub struct RedbStore {
    db: Database,
    path: PathBuf,
}

impl RedbStore {
    /// Opens the store file at `path`, creating it (and every table) if it does not exist. After
    /// a crash this is where redb repairs the file, so the call may take longer than usual.
    pub fn open(path: &Path) -> Result<RedbStore, Error> {
        let path = path.to_path_buf();
        let db = Database::create(&path).map_err(|e| err("open", &path, e))?;
        let store = RedbStore { db, path };
        store.create_tables()?;
        Ok(store)
    }

    /// Creates every table that does not exist yet, so read transactions can open them all.
    fn create_tables(&self) -> Result<(), Error> {
        let mut txn = self.begin_write()?;
        for table in Table::ALL {
            txn.open_table(definition(table))
                .map_err(|e| self.err("create a table", e))?;
        }
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err("set durability", e))?;
        txn.commit().map_err(|e| self.err("commit", e))
    }

    fn begin_write(&self) -> Result<::redb::WriteTransaction, Error> {
        self.db
            .begin_write()
            .map_err(|e| self.err("begin a write transaction", e))
    }

    fn err(&self, action: &'static str, source: impl Into<::redb::Error>) -> Error {
        err(action, &self.path, source)
    }
}

fn err(action: &'static str, path: &Path, source: impl Into<::redb::Error>) -> Error {
    Error::Redb {
        action,
        path: path.to_path_buf(),
        source: Box::new(source.into()),
    }
}

impl Store for RedbStore {
    fn get(&self, table: Table, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err("begin a read transaction", e))?;
        let t = txn
            .open_table(definition(table))
            .map_err(|e| self.err("open a table", e))?;
        let value = t.get(key).map_err(|e| self.err("read", e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    fn scan(&self, table: Table, prefix: &[u8]) -> Result<Vec<Entry>, Error> {
        let txn = self
            .db
            .begin_read()
            .map_err(|e| self.err("begin a read transaction", e))?;
        let t = txn
            .open_table(definition(table))
            .map_err(|e| self.err("open a table", e))?;
        let mut out = Vec::new();
        for entry in t
            .range::<&[u8]>(prefix..)
            .map_err(|e| self.err("scan", e))?
        {
            let (k, v) = entry.map_err(|e| self.err("scan", e))?;
            if !k.value().starts_with(prefix) {
                break;
            }
            out.push((k.value().to_vec(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn commit(&self, batch: &Batch) -> Result<(), Error> {
        let mut txn = self.begin_write()?;
        txn.set_durability(Durability::Immediate)
            .map_err(|e| self.err("set durability", e))?;
        let conflict = self.apply(&txn, batch)?;
        if let Some(error) = conflict {
            // Dropping an uncommitted write transaction would abort it too; aborting explicitly
            // reports a failure to roll back instead of hiding it.
            txn.abort().map_err(|e| self.err("abort", e))?;
            return Err(error);
        }
        txn.commit().map_err(|e| self.err("commit", e))
    }
}

/// The tables a write transaction has opened. redb refuses to open one table twice in a
/// transaction, so each is opened once, when the batch first touches it, and all are closed
/// (dropped) before the commit.
struct OpenTables<'txn> {
    txn: &'txn ::redb::WriteTransaction,
    tables: [Option<::redb::Table<'txn, &'static [u8], &'static [u8]>>; Table::ALL.len()],
}

impl<'txn> OpenTables<'txn> {
    fn table(
        &mut self,
        store: &RedbStore,
        table: Table,
    ) -> Result<&mut ::redb::Table<'txn, &'static [u8], &'static [u8]>, Error> {
        let slot = &mut self.tables[table.index()];
        let t = match slot.take() {
            Some(t) => t,
            None => self
                .txn
                .open_table(definition(table))
                .map_err(|e| store.err("open a table", e))?,
        };
        Ok(slot.insert(t))
    }
}

impl RedbStore {
    /// Checks the batch's preconditions and, if they hold, applies its operations inside `txn`.
    /// Returns the conflict if one does not hold (nothing is written then).
    fn apply(&self, txn: &::redb::WriteTransaction, batch: &Batch) -> Result<Option<Error>, Error> {
        let mut open = OpenTables {
            txn,
            tables: Default::default(),
        };
        for pre in batch.preconditions() {
            let t = open.table(self, pre.table)?;
            let actual = t
                .get(pre.key.as_slice())
                .map_err(|e| self.err("read a precondition", e))?;
            let holds = match (&actual, &pre.expected) {
                (None, None) => true,
                (Some(a), Some(e)) => a.value() == e.as_slice(),
                _ => false,
            };
            if !holds {
                return Ok(Some(Error::Conflict {
                    table: pre.table,
                    key: pre.key.clone(),
                }));
            }
        }
        for op in batch.ops() {
            match op {
                Op::Put { table, key, value } => {
                    open.table(self, *table)?
                        .insert(key.as_slice(), value.as_slice())
                        .map_err(|e| self.err("insert", e))?;
                }
                Op::Delete { table, key } => {
                    open.table(self, *table)?
                        .remove(key.as_slice())
                        .map_err(|e| self.err("remove", e))?;
                }
            }
        }
        Ok(None)
    }
}
