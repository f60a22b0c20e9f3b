//! The [`Store`] on redb, the default engine.
//!
//! One file; each [`Table`] is a redb table of `&[u8]` to `&[u8]` with the table's name. A
//! [`Batch`] is one write transaction committed with [`Durability::Immediate`], which redb
//! documents as "guaranteed to be persistent as soon as `commit` returns": redb writes the new
//! tree and the inactive commit slot, flips the primary bit, then fsyncs; after a crash it opens
//! the newest commit slot whose checksum is valid. redb allows one write transaction at a time,
//! so reading a batch's preconditions inside its write transaction makes check-and-write
//! serializable with every other commit.

use std::fs::{self, File};
use std::io;
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
        match fs::symlink_metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => create(&path)?,
            Err(e) => return Err(io_err("inspect", &path, e)),
        }
        let db = Database::create(&path).map_err(|e| err("open", &path, e))?;
        let store = RedbStore { db, path };
        store.create_tables()?;
        Ok(store)
    }

    /// Opens (creating if empty) a store on another redb storage backend; `name` stands for
    /// the path in errors. The power-cut test uses it to put the store on a simulated disk.
    /// Unlike [`RedbStore::open`], creating the store here is not atomic: a crash while it is
    /// created can leave a backend that does not open.
    pub fn open_backend(
        backend: impl ::redb::StorageBackend,
        name: &Path,
    ) -> Result<RedbStore, Error> {
        let path = name.to_path_buf();
        let db = ::redb::Builder::new()
            .create_with_backend(backend)
            .map_err(|e| err("open", &path, e))?;
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

/// Creates a new store at `path` atomically: redb writes its header and first commit in
/// several steps, and a crash between them leaves a file redb refuses to open ("not a redb
/// database"), which would keep the controller from starting. So the store is made under a
/// temporary name, with every table, committed durably, then renamed into place and the
/// directory fsynced: a file at `path` is always a complete store.
fn create(path: &Path) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".creating");
    let tmp = PathBuf::from(tmp);
    // A leftover from a crash during an earlier creation; it never held data.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove the leftover", &tmp, e)),
    }
    {
        let db = Database::create(&tmp).map_err(|e| err("create", &tmp, e))?;
        RedbStore {
            db,
            path: tmp.clone(),
        }
        .create_tables()?;
    }
    fs::rename(&tmp, path).map_err(|e| io_err("move into place", path, e))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("sync the directory", dir, e))
}

fn io_err(action: &'static str, path: &Path, source: io::Error) -> Error {
    Error::Io {
        action,
        path: path.to_path_buf(),
        source,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Batch, Table};

    /// A crash while an earlier open was creating the store leaves only a `.creating` file,
    /// which the next open replaces; the store's own path never holds a half-made store.
    #[test]
    fn creation_is_atomic_and_recovers_from_a_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        let leftover = dir.path().join("store.redb.creating");
        fs::write(&leftover, b"half a header").unwrap();
        let store = RedbStore::open(&path).unwrap();
        assert!(!leftover.exists());
        store
            .commit(Batch::new().put(Table::Meta, "k", "v"))
            .unwrap();
        drop(store);
        let store = RedbStore::open(&path).unwrap();
        assert_eq!(store.get(Table::Meta, b"k").unwrap(), Some(b"v".to_vec()));
    }

    /// A file at the store's path that is not a store is refused, not replaced.
    #[test]
    fn a_foreign_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("store.redb");
        fs::write(&path, b"not a database").unwrap();
        let e = RedbStore::open(&path).unwrap_err();
        assert!(e.to_string().contains("cannot open"), "{e}");
        assert_eq!(fs::read(&path).unwrap(), b"not a database");
    }
}
