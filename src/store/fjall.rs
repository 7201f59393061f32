//! [`FjallStore`]: a [`Store`] kept in a fjall 3 database.

use super::marker::{self, State, MARKER_FILE, MARKER_TEMP_PREFIX};
use super::{key_to_hex, Store, StoreError, StoreOp};
use ::fjall::{Database, Keyspace, KeyspaceCreateOptions, PersistMode};
use std::collections::HashSet;
use std::io::ErrorKind;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Keyspace with one record per entry.
const ENTRIES_KEYSPACE: &str = "entries";

/// Keyspace of keywheel's own bookkeeping, apart from the records so that
/// [`Store::scan`] never returns it.
const META_KEYSPACE: &str = "keywheel_meta";

/// Key in [`META_KEYSPACE`] of the number of commits, a big-endian `u64`.
/// Every commit rewrites it in the same atomic batch as its records.
const COMMITS_KEY: &[u8] = b"commits";

/// Largest key fjall 3 accepts: its journal stores key lengths as `u16`.
const MAX_KEY_BYTES: usize = u16::MAX as usize;

/// Largest value fjall 3 accepts: its journal stores value lengths as `u32`.
const MAX_VALUE_BYTES: u64 = u32::MAX as u64;

/// Maximum wait at close for fjall to write its memtables into tables, far
/// above the 1.1 to 2.4 s that closing a store of 1M records took on a busy
/// 2-core VM.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);

/// File and folder names of fjall 3.1's own layout, checked before fjall
/// opens a directory.
const FJALL_VERSION_FILE: &str = "version";
const FJALL_LOCK_FILE: &str = "lock";
const FJALL_KEYSPACES_DIR: &str = "keyspaces";
const FJALL_TREE_VERSION_FILE: &str = "current";

/// A [`Store`] kept in a [fjall](https://docs.rs/fjall/3) 3 database in one
/// directory.
///
/// The records live in the fjall keyspace `entries`. A file `KEYWHEEL`
/// next to fjall's files marks the directory as a keywheel store, contains
/// the store's format version, and records whether the last process
/// closed the store cleanly.
///
/// # Durability
///
/// [`commit`](Store::commit) writes one fjall batch to the journal and
/// syncs it with `fdatasync` ([`PersistMode::SyncData`]) before it
/// returns, so a committed batch survives a crash of the process or of the
/// machine, as far as the disk honours the sync. Each sync costs a few
/// milliseconds, so callers should gather changes into batches.
///
/// # Locking
///
/// fjall 3 holds an exclusive `flock` on the file `lock` in the directory
/// while a database is open. A second [`FjallStore::open`] of the same
/// directory, in the same or another process, fails with
/// [`StoreError::Locked`] after fjall has retried for about 0.2 s. The
/// kernel releases the lock when the process ends, even by `kill -9`. The
/// lock protects nothing on file systems where `flock` is local to one
/// machine, such as some NFS setups.
///
/// # Damage checks
///
/// [`FjallStore::open`] returns [`StoreError::Damaged`], and writes no
/// record, when the directory contains files but no `KEYWHEEL` marker,
/// when the marker is not keywheel's or comes from a newer format, when
/// fjall's files are missing or fail fjall's recovery, or when a store that
/// was closed cleanly contains another number of commits than it recorded
/// at closing. Before fjall runs, keywheel also checks the parts of fjall's
/// layout whose damage fjall would answer by deleting a keyspace folder or
/// by a panic. A damaged table block fails [`Store::scan`] with `Damaged`.
///
/// fjall's recovery ends the journal at the first entry it cannot decode
/// and cuts the rest off, as it must for the incomplete last batch of a
/// crash. A clean close first writes every record into table files, so
/// damage to the journal after a clean close loses nothing.
///
/// NOTE: After a crash, damage in the middle of the journal loses the
/// batches behind it without an error, because the store then has no
/// commit count to compare.
///
/// # Example
///
/// ```
/// use keywheel::store::{FjallStore, Store, StoreOp};
///
/// # fn main() -> Result<(), keywheel::store::StoreError> {
/// let dir = std::env::temp_dir().join(format!("keywheel-fjall-doc-{}", std::process::id()));
/// # let _ = std::fs::remove_dir_all(&dir);
/// let mut store = FjallStore::open(&dir)?;
/// store.commit(&[StoreOp::Put { key: b"id-1".to_vec(), value: b"v".to_vec() }])?;
/// assert!(store.describe().starts_with("fjall store at "));
/// store.close()?;
/// # std::fs::remove_dir_all(&dir).unwrap();
/// # Ok(())
/// # }
/// ```
pub struct FjallStore {
    path: PathBuf,
    // Field order is drop order: both keyspaces go before the database.
    entries: Keyspace,
    meta: Keyspace,
    database: Database,
    /// Commits made so far, as stored under [`COMMITS_KEY`].
    commits: u64,
    /// Set when a commit failed, because the stored commit count is then
    /// unknown and the marker must not record one.
    commit_failed: bool,
    /// Set by [`FjallStore::close`], so that `Drop` does nothing.
    closed: bool,
}

impl FjallStore {
    /// Opens the store in directory `path`, or creates it.
    ///
    /// A missing directory is created, but its parent must exist, so a
    /// mistyped path or an unmounted disk fails instead of filling another
    /// disk. An empty directory becomes a new store. An existing store is
    /// recovered by fjall, which replays its journal.
    ///
    /// # Errors
    ///
    /// - [`StoreError::Locked`] when another store holds the directory.
    /// - [`StoreError::Damaged`] when the directory contains other data,
    ///   comes from a newer keywheel, or is damaged (see
    ///   [damage checks](FjallStore#damage-checks)). No record is written
    ///   then.
    /// - [`StoreError::Io`] when a file operation fails, such as creating
    ///   the directory under a missing parent.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::store::{FjallStore, StoreError};
    ///
    /// let dir = std::env::temp_dir().join(format!("keywheel-open-doc-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let store = FjallStore::open(&dir).unwrap();
    /// let second = FjallStore::open(&dir);
    /// assert!(matches!(second, Err(StoreError::Locked { .. })));
    /// drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn open(path: impl AsRef<Path>) -> Result<FjallStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        prepare_directory(&path)?;

        // This first look at the marker runs before fjall locks the
        // directory, so it only decides whether keywheel may touch it.
        match marker::read(&path)? {
            None => {
                if let Some(name) = first_foreign_file(&path)? {
                    return Err(StoreError::Damaged {
                        path,
                        detail: format!(
                            "it contains {name:?} but no {MARKER_FILE} file, so it is not a keywheel store"
                        ),
                    });
                }
                marker::write(&path, State::Creating)?;
            }
            Some(State::Creating) => {}
            Some(State::Open | State::Closed { .. }) => check_fjall_layout(&path)?,
        }

        let database = open_database(&path)?;

        // fjall holds the lock from here on, so this read of the marker
        // returns the state that the last process left.
        let state = marker::read(&path)?.ok_or_else(|| StoreError::Damaged {
            path: path.clone(),
            detail: format!("its {MARKER_FILE} file disappeared while the store was opened"),
        })?;
        let (entries, meta) = open_keyspaces(&path, &database, state)?;
        let commits = read_commit_count(&path, &meta)?;

        if let State::Closed { commits: expected } = state {
            if commits != expected {
                return Err(StoreError::Damaged {
                    path,
                    detail: format!(
                        "it was closed cleanly after {expected} commits, but its files contain \
                         {commits}, so fjall's recovery lost data, for example by cutting a \
                         damaged journal short at its first unreadable entry"
                    ),
                });
            }
        }

        if state == State::Creating {
            database
                .persist(PersistMode::SyncAll)
                .map_err(|error| io_error(&path, "create the fjall database", error))?;
        }
        marker::write(&path, State::Open)?;

        Ok(FjallStore {
            path,
            entries,
            meta,
            database,
            commits,
            commit_failed: false,
            closed: false,
        })
    }

    /// Returns the data directory.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::store::FjallStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("keywheel-path-doc-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let store = FjallStore::open(&dir).unwrap();
    /// assert_eq!(store.path(), dir.as_path());
    /// # drop(store);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Flushes the memtables into table files, syncs the journal, records
    /// a clean close in the `KEYWHEEL` marker and closes the store, stopping
    /// fjall's background threads.
    ///
    /// The flush makes the next open fast, because fjall then reads tables
    /// instead of replaying its journal. It waits up to 30 s, and a failed
    /// or slow flush is logged and loses nothing.
    ///
    /// Dropping the store does the same but can only log a failure. After
    /// a failed commit, the store closes without recording a clean close,
    /// so the next open skips the commit count check.
    ///
    /// # Errors
    ///
    /// [`StoreError::Io`] when the sync or the marker update fails. The
    /// store is closed all the same, and the next open recovers it from
    /// the journal like after a crash.
    ///
    /// # Example
    ///
    /// ```
    /// use keywheel::store::FjallStore;
    ///
    /// let dir = std::env::temp_dir().join(format!("keywheel-close-doc-{}", std::process::id()));
    /// # let _ = std::fs::remove_dir_all(&dir);
    /// let store = FjallStore::open(&dir).unwrap();
    /// store.close().unwrap();
    /// assert!(FjallStore::open(&dir).is_ok());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn close(mut self) -> Result<(), StoreError> {
        self.closed = true;
        self.record_clean_close()
    }

    /// Flushes the memtables, syncs the journal and writes `closed N` into
    /// the marker. This runs while fjall still holds the directory lock, so
    /// no other store can commit between the marker update and the end of
    /// this one.
    fn record_clean_close(&self) -> Result<(), StoreError> {
        if self.commit_failed {
            return Ok(());
        }
        if let Err(detail) = self.flush_memtables() {
            tracing::warn!(
                path = %self.path.display(),
                %detail,
                "failed to flush the store's memtables at close; the next start replays them from the journal"
            );
        }
        self.database
            .persist(PersistMode::SyncAll)
            .map_err(|error| io_error(&self.path, "sync the journal", error))?;
        marker::write(
            &self.path,
            State::Closed {
                commits: self.commits,
            },
        )
    }

    /// Writes the records that exist only in memtables and the journal
    /// into table files, and waits at most [`FLUSH_TIMEOUT`] for fjall's
    /// background threads to finish.
    ///
    /// A store closed this way opens without replaying its journal. Reopen
    /// and scan of 1M records of 95 bytes took 0.7 to 1.1 s with the flush,
    /// and 2.9 to 7 s without it, on a busy 2-core VM in a release build.
    /// The flush also puts every record under a block checksum, where damage
    /// fails the scan instead of cutting the journal short. A failure here
    /// loses nothing, because the journal still contains every record.
    ///
    /// NOTE: `rotate_memtable` and `sealed_memtable_count` are hidden from
    /// fjall's docs (fjall 3.1.13), so a later fjall release may change them.
    /// fjall's own `rotate_memtable_and_wait` is not used, because it waits
    /// forever when a flush fails.
    fn flush_memtables(&self) -> Result<(), String> {
        let keyspaces = [&self.entries, &self.meta];
        for keyspace in keyspaces {
            keyspace
                .rotate_memtable()
                .map_err(|error| format!("rotating the memtable failed: {error}"))?;
        }

        let deadline = Instant::now() + FLUSH_TIMEOUT;
        while keyspaces
            .iter()
            .any(|keyspace| keyspace.sealed_memtable_count() > 0)
        {
            // A failed flush poisons the database, and then this returns it.
            self.database
                .persist(PersistMode::Buffer)
                .map_err(|error| format!("a background flush failed: {error}"))?;
            if Instant::now() >= deadline {
                return Err(format!(
                    "the flush did not finish within {} s",
                    FLUSH_TIMEOUT.as_secs()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }

    fn scan_error(&self, error: ::fjall::Error) -> StoreError {
        if is_damage(&error) {
            StoreError::Damaged {
                path: self.path.clone(),
                detail: format!("reading the records failed: {error}"),
            }
        } else {
            io_error(&self.path, "scan the records", error)
        }
    }
}

impl Store for FjallStore {
    fn scan(
        &mut self,
        visit: &mut dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        for guard in self.entries.iter() {
            let (key, value) = guard.into_inner().map_err(|error| self.scan_error(error))?;
            visit(&key, &value)?;
        }
        Ok(())
    }

    fn commit(&mut self, batch: &[StoreOp]) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        check_limits(batch)?;

        let mut write = self
            .database
            .batch()
            .durability(Some(PersistMode::SyncData));
        // fjall gives every item of a batch the same sequence number, so two
        // ops on one key would leave the winner to chance. Only the last op
        // per key goes into the batch.
        for op in last_op_per_key(batch) {
            match op {
                StoreOp::Put { key, value } => {
                    write.insert(&self.entries, key.as_slice(), value.as_slice())
                }
                StoreOp::Delete { key } => write.remove(&self.entries, key.as_slice()),
            }
        }
        let commits = self.commits + 1;
        write.insert(&self.meta, COMMITS_KEY, &commits.to_be_bytes()[..]);

        if let Err(error) = write.commit() {
            self.commit_failed = true;
            return Err(commit_error(&self.path, error));
        }
        self.commits = commits;
        Ok(())
    }

    /// Returns fjall's estimate of the record count. It is at least the
    /// number of records, because it also counts overwritten values and
    /// deletions that compaction has not dropped yet. It is exact while no
    /// record was overwritten or deleted. After 1.1M to 1.5M random updates
    /// of 1M records, it returned 1.9M to 2.3M (two runs on a 2-core VM).
    fn approximate_len(&self) -> u64 {
        self.entries.approximate_len() as u64
    }

    fn describe(&self) -> String {
        format!("fjall store at {}", self.path.display())
    }
}

impl Drop for FjallStore {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        if let Err(error) = self.record_clean_close() {
            tracing::warn!(
                path = %self.path.display(),
                %error,
                "failed to close the store cleanly; the next start recovers it from the journal"
            );
        }
    }
}

impl std::fmt::Debug for FjallStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FjallStore")
            .field("path", &self.path)
            .field("commits", &self.commits)
            .finish_non_exhaustive()
    }
}

/// Creates `path` if it is missing, and checks that it is a directory.
fn prepare_directory(path: &Path) -> Result<(), StoreError> {
    match std::fs::metadata(path) {
        Ok(metadata) if metadata.is_dir() => Ok(()),
        Ok(_) => Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail: "it is a file, not a directory".to_string(),
        }),
        Err(error) if error.kind() == ErrorKind::NotFound => {
            std::fs::create_dir(path).map_err(|source| StoreError::Io {
                path: path.to_path_buf(),
                operation: "create the data directory (its parent directory must exist)",
                source,
            })?;
            if let Some(parent) = path
                .parent()
                .filter(|parent| !parent.as_os_str().is_empty())
            {
                marker::sync_directory(parent).map_err(|source| StoreError::Io {
                    path: parent.to_path_buf(),
                    operation: "sync the parent of the data directory",
                    source,
                })?;
            }
            Ok(())
        }
        Err(source) => Err(StoreError::Io {
            path: path.to_path_buf(),
            operation: "read the data directory",
            source,
        }),
    }
}

/// Returns the name of a file in `path` that keywheel did not write, if any.
/// Only left-over temporary markers are allowed in a new store.
fn first_foreign_file(path: &Path) -> Result<Option<String>, StoreError> {
    let read_error = |source| StoreError::Io {
        path: path.to_path_buf(),
        operation: "list the data directory",
        source,
    };
    for dirent in std::fs::read_dir(path).map_err(read_error)? {
        let name = dirent.map_err(read_error)?.file_name();
        if !name.to_string_lossy().starts_with(MARKER_TEMP_PREFIX) {
            return Ok(Some(name.to_string_lossy().into_owned()));
        }
    }
    Ok(None)
}

/// Checks the parts of fjall 3.1's layout that its recovery does not check
/// itself. On a missing `current` file, fjall deletes the keyspace folder
/// as unfinished, and on a folder name that is not a number, it panics.
fn check_fjall_layout(path: &Path) -> Result<(), StoreError> {
    let damaged = |detail: String| StoreError::Damaged {
        path: path.to_path_buf(),
        detail,
    };
    for name in [FJALL_VERSION_FILE, FJALL_LOCK_FILE] {
        if !path.join(name).is_file() {
            return Err(damaged(format!("fjall's file {name:?} is missing")));
        }
    }
    check_journal(path)?;

    let keyspaces = path.join(FJALL_KEYSPACES_DIR);
    let read_error = |source| StoreError::Io {
        path: keyspaces.clone(),
        operation: "list fjall's keyspaces",
        source,
    };
    let dirents = match std::fs::read_dir(&keyspaces) {
        Ok(dirents) => dirents,
        Err(error) if error.kind() == ErrorKind::NotFound => {
            return Err(damaged(format!(
                "fjall's folder {FJALL_KEYSPACES_DIR:?} is missing"
            )));
        }
        Err(error) => return Err(read_error(error)),
    };
    for dirent in dirents {
        let dirent = dirent.map_err(read_error)?;
        // fjall skips stray files here, so only folders matter.
        if !dirent.file_type().map_err(read_error)?.is_dir() {
            continue;
        }
        let name = dirent.file_name();
        let Some(id) = name.to_str().and_then(|name| name.parse::<u64>().ok()) else {
            return Err(damaged(format!(
                "{FJALL_KEYSPACES_DIR}/{} is not a fjall keyspace folder",
                name.to_string_lossy()
            )));
        };
        if !dirent.path().join(FJALL_TREE_VERSION_FILE).is_file() {
            return Err(damaged(format!(
                "the fjall keyspace folder {FJALL_KEYSPACES_DIR}/{id} has no \
                 {FJALL_TREE_VERSION_FILE:?} file"
            )));
        }
    }
    Ok(())
}

/// Checks that the directory has a journal file.
///
/// fjall creates its journal (`*.jnl`) before the marker says the store is
/// open, so a store past that point always has one; after a clean close it
/// may be empty, because the tables hold everything. Without it, fjall
/// would start a new journal whose sequence numbers restart below those of
/// the data already in its tables: the store would look empty, and later
/// writes could be hidden by older records at the next start.
///
/// NOTE: a journal cut to zero bytes after a crash is not detected; like a
/// journal damaged in the middle, it loses the writes it held.
fn check_journal(path: &Path) -> Result<(), StoreError> {
    let read_error = |source| StoreError::Io {
        path: path.to_path_buf(),
        operation: "list the journal files",
        source,
    };
    let mut journals = 0;
    for dirent in std::fs::read_dir(path).map_err(read_error)? {
        let dirent = dirent.map_err(read_error)?;
        let is_journal = dirent
            .file_name()
            .to_str()
            .is_some_and(|name| name.ends_with(".jnl"));
        if is_journal {
            journals += 1;
        }
    }
    if journals == 0 {
        return Err(StoreError::Damaged {
            path: path.to_path_buf(),
            detail: "fjall's journal (a *.jnl file) is missing, so the most recent writes \
                     are gone and older records could hide newer ones"
                .to_string(),
        });
    }
    Ok(())
}

/// Opens the fjall database in `path`, turning a panic in fjall's recovery
/// into [`StoreError::Damaged`].
fn open_database(path: &Path) -> Result<Database, StoreError> {
    // The store syncs every batch itself, so fjall need not flush batches to
    // the OS on its own.
    let open = || Database::builder(path).manual_journal_persist(true).open();
    match panic::catch_unwind(AssertUnwindSafe(open)) {
        Ok(Ok(database)) => Ok(database),
        Ok(Err(error)) => Err(open_error(path, error)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|text| text.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".to_string());
            Err(StoreError::Damaged {
                path: path.to_path_buf(),
                detail: format!("fjall panicked while recovering the database: {message}"),
            })
        }
    }
}

/// Opens both keyspaces. A new store creates them, and an existing one must
/// have them, because creating them there would hide lost data.
fn open_keyspaces(
    path: &Path,
    database: &Database,
    state: State,
) -> Result<(Keyspace, Keyspace), StoreError> {
    let mut keyspaces = Vec::with_capacity(2);
    for name in [ENTRIES_KEYSPACE, META_KEYSPACE] {
        if state != State::Creating && !database.keyspace_exists(name) {
            return Err(StoreError::Damaged {
                path: path.to_path_buf(),
                detail: format!("its fjall keyspace {name:?} is missing"),
            });
        }
        let keyspace = database
            .keyspace(name, KeyspaceCreateOptions::default)
            .map_err(|error| open_error(path, error))?;
        keyspaces.push(keyspace);
    }
    let meta = keyspaces.pop().expect("two keyspaces were opened");
    let entries = keyspaces.pop().expect("two keyspaces were opened");
    Ok((entries, meta))
}

fn read_commit_count(path: &Path, meta: &Keyspace) -> Result<u64, StoreError> {
    let stored = meta
        .get(COMMITS_KEY)
        .map_err(|error| open_error(path, error))?;
    let Some(bytes) = stored else {
        return Ok(0);
    };
    let bytes: [u8; 8] = bytes.as_ref().try_into().map_err(|_| StoreError::Damaged {
        path: path.to_path_buf(),
        detail: format!(
            "its commit count has {} bytes instead of 8",
            bytes.as_ref().len()
        ),
    })?;
    Ok(u64::from_be_bytes(bytes))
}

/// Checks every op of `batch` against fjall's size limits, so that fjall,
/// which asserts them, never gets an op over them.
fn check_limits(batch: &[StoreOp]) -> Result<(), StoreError> {
    for op in batch {
        let key = op.key();
        let detail = if key.is_empty() {
            "fjall does not store empty keys".to_string()
        } else if key.len() > MAX_KEY_BYTES {
            format!(
                "the key has {} bytes and fjall stores keys of at most {MAX_KEY_BYTES} bytes; \
                 use shorter ids",
                key.len()
            )
        } else if let StoreOp::Put { value, .. } = op {
            if value.len() as u64 > MAX_VALUE_BYTES {
                format!(
                    "the value has {} bytes and fjall stores values of at most {MAX_VALUE_BYTES} \
                     bytes; use smaller payloads",
                    value.len()
                )
            } else {
                continue;
            }
        } else {
            continue;
        };
        return Err(StoreError::Rejected {
            key: key_to_hex(key),
            detail,
        });
    }
    Ok(())
}

/// Returns the last op on each key of `batch`, in batch order.
fn last_op_per_key(batch: &[StoreOp]) -> Vec<&StoreOp> {
    let mut seen = HashSet::with_capacity(batch.len());
    let mut ops: Vec<&StoreOp> = batch
        .iter()
        .rev()
        .filter(|op| seen.insert(op.key()))
        .collect();
    ops.reverse();
    ops
}

/// Returns true when `error` means that the files hold invalid data, as
/// opposed to a failed system call such as a full disk.
fn is_damage(error: &::fjall::Error) -> bool {
    match io_error_kind(error) {
        Some(kind) => matches!(
            kind,
            ErrorKind::NotFound | ErrorKind::UnexpectedEof | ErrorKind::InvalidData
        ),
        None => true,
    }
}

/// Returns the kind of the I/O error at the root of `error`, if there is one.
fn io_error_kind(error: &::fjall::Error) -> Option<ErrorKind> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(error) = current {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        current = error.source();
    }
    None
}

fn open_error(path: &Path, error: ::fjall::Error) -> StoreError {
    if matches!(error, ::fjall::Error::Locked) {
        return StoreError::Locked {
            path: path.to_path_buf(),
        };
    }
    if is_damage(&error) {
        return StoreError::Damaged {
            path: path.to_path_buf(),
            detail: format!("fjall failed to recover it: {error}"),
        };
    }
    io_error(path, "open the fjall database", error)
}

fn commit_error(path: &Path, error: ::fjall::Error) -> StoreError {
    if matches!(error, ::fjall::Error::Poisoned) {
        return StoreError::Io {
            path: path.to_path_buf(),
            operation: "commit a batch",
            source: std::io::Error::other(
                "an earlier write failed to reach the disk, so fjall accepts no more writes; \
                 restart keywheel to recover the store from its journal",
            ),
        };
    }
    io_error(path, "commit a batch", error)
}

fn io_error(path: &Path, operation: &'static str, error: ::fjall::Error) -> StoreError {
    let kind = io_error_kind(&error).unwrap_or(ErrorKind::Other);
    StoreError::Io {
        path: path.to_path_buf(),
        operation,
        source: std::io::Error::new(kind, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &[u8], value: &[u8]) -> StoreOp {
        StoreOp::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }
    }

    fn delete(key: &[u8]) -> StoreOp {
        StoreOp::Delete { key: key.to_vec() }
    }

    #[test]
    fn last_op_per_key_keeps_latest() {
        let batch = [
            put(b"a", b"1"),
            put(b"b", b"1"),
            delete(b"a"),
            put(b"b", b"2"),
        ];
        let ops = last_op_per_key(&batch);
        assert_eq!(ops, vec![&delete(b"a"), &put(b"b", b"2")]);
    }

    #[test]
    fn check_limits_rejects_empty_key() {
        let error = check_limits(&[put(b"ok", b""), delete(b"")]).unwrap_err();
        assert!(matches!(error, StoreError::Rejected { .. }), "{error:?}");
        assert!(error.to_string().contains("empty keys"), "{error}");
    }

    #[test]
    fn check_limits_rejects_long_key() {
        let key = vec![7u8; MAX_KEY_BYTES + 1];
        let error = check_limits(&[put(&key, b"")]).unwrap_err();
        let message = error.to_string();
        assert!(message.contains("65536 bytes"), "{message}");
        assert!(message.contains("0707"), "{message}");
    }

    #[test]
    fn check_limits_accepts_max_key() {
        let key = vec![7u8; MAX_KEY_BYTES];
        assert!(check_limits(&[put(&key, b"v"), delete(&key)]).is_ok());
    }

    #[test]
    fn is_damage_sorts_errors() {
        let full_disk = ::fjall::Error::Io(std::io::Error::from(ErrorKind::StorageFull));
        let short_file = ::fjall::Error::Io(std::io::Error::from(ErrorKind::UnexpectedEof));
        assert!(!is_damage(&full_disk));
        assert!(is_damage(&short_file));
        assert!(is_damage(&::fjall::Error::Unrecoverable));
    }
}
