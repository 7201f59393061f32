//! The `KEYWHEEL` marker file that makes a directory a keywheel store.
//!
//! The marker is a short text file:
//!
//! ```text
//! keywheel store
//! format 1
//! state closed 4711
//! ```
//!
//! The first line identifies the directory as a keywheel store, so that
//! keywheel never writes into a directory of other data. `format` is the
//! layout version of the store. `state` records how the last process left
//! the store:
//!
//! - `creating`: a store is being created and contains no record yet.
//! - `open`: a process has the store open, or stopped without closing it.
//! - `closed N`: the last process closed the store cleanly after `N`
//!   commits, so the next open can check that all `N` are still there.
//!
//! Every update writes a temporary file, syncs it, renames it over the
//! marker and syncs the directory, so a crash leaves either the old or the
//! new marker.

use super::StoreError;
use std::fs::{self, File};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// File name of the marker inside the data directory.
pub(super) const MARKER_FILE: &str = "KEYWHEEL";

/// Start of the file name of a marker being written. It replaces
/// [`MARKER_FILE`] once it is complete, so a leftover one belongs to an
/// update that crashed. The rest of the name is unique to each update, so
/// that two processes creating one store never write the same file.
pub(super) const MARKER_TEMP_PREFIX: &str = "KEYWHEEL.tmp.";

/// Number of marker updates in this process, part of each temporary name.
static UPDATES: AtomicU64 = AtomicU64::new(0);

/// Store layout this build writes and reads.
pub(super) const FORMAT: u32 = 1;

const FIRST_LINE: &str = "keywheel store";

/// State in which the last process left a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum State {
    /// The store is being created and contains no record.
    Creating,
    /// The store is open, or its process stopped without closing it.
    Open,
    /// The store was closed cleanly after this many commits.
    Closed { commits: u64 },
}

/// Reads the marker of `dir`. Returns `None` when `dir` has no marker.
pub(super) fn read(dir: &Path) -> Result<Option<State>, StoreError> {
    let path = dir.join(MARKER_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == ErrorKind::NotFound => return Ok(None),
        Err(error) if error.kind() == ErrorKind::InvalidData => {
            return Err(damaged(dir, "its KEYWHEEL file is not UTF-8 text"));
        }
        Err(source) => {
            return Err(StoreError::Io {
                path,
                operation: "read the KEYWHEEL marker",
                source,
            })
        }
    };
    parse(&text)
        .map(Some)
        .map_err(|detail| damaged(dir, &detail))
}

/// Replaces the marker of `dir` with one that records `state`.
pub(super) fn write(dir: &Path, state: State) -> Result<(), StoreError> {
    let update = UPDATES.fetch_add(1, Ordering::Relaxed);
    let temp_path = dir.join(format!(
        "{MARKER_TEMP_PREFIX}{}.{update}",
        std::process::id()
    ));
    let io_error = |path: PathBuf| {
        move |source| StoreError::Io {
            path,
            operation: "write the KEYWHEEL marker",
            source,
        }
    };

    let mut file = File::create_new(&temp_path).map_err(io_error(temp_path.clone()))?;
    let written = file
        .write_all(render(state).as_bytes())
        .and_then(|()| file.sync_all())
        .and_then(|()| fs::rename(&temp_path, dir.join(MARKER_FILE)));
    drop(file);
    if let Err(source) = written {
        // The temporary file is keywheel's own and incomplete.
        let _ = fs::remove_file(&temp_path);
        return Err(io_error(temp_path)(source));
    }

    sync_directory(dir).map_err(io_error(dir.to_path_buf()))
}

/// Syncs the entries of directory `dir`, so that a created or renamed
/// file in it survives a power loss.
pub(super) fn sync_directory(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

fn render(state: State) -> String {
    let state = match state {
        State::Creating => "creating".to_string(),
        State::Open => "open".to_string(),
        State::Closed { commits } => format!("closed {commits}"),
    };
    format!("{FIRST_LINE}\nformat {FORMAT}\nstate {state}\n")
}

fn parse(text: &str) -> Result<State, String> {
    let mut lines = text.lines();
    if lines.next() != Some(FIRST_LINE) {
        return Err(format!(
            "its KEYWHEEL file does not start with the line {FIRST_LINE:?}"
        ));
    }

    let format = lines
        .next()
        .and_then(|line| line.strip_prefix("format "))
        .and_then(|number| number.parse::<u32>().ok())
        .ok_or("the second line of its KEYWHEEL file is not `format <number>`")?;
    if format > FORMAT {
        return Err(format!(
            "it has store format {format}, written by a newer keywheel, and this build reads \
             format {FORMAT} only; run the newer keywheel on it"
        ));
    }
    if format < FORMAT {
        return Err(format!(
            "it has store format {format}, which this build does not read"
        ));
    }

    let state = lines
        .next()
        .and_then(|line| line.strip_prefix("state "))
        .ok_or("the third line of its KEYWHEEL file is not `state <state>`")?;
    match state.split_once(' ') {
        None if state == "creating" => Ok(State::Creating),
        None if state == "open" => Ok(State::Open),
        Some(("closed", commits)) => commits
            .parse()
            .map(|commits| State::Closed { commits })
            .map_err(|_| format!("its KEYWHEEL file has an invalid commit count {commits:?}")),
        _ => Err(format!("its KEYWHEEL file has an unknown state {state:?}")),
    }
}

fn damaged(dir: &Path, detail: &str) -> StoreError {
    StoreError::Damaged {
        path: dir.to_path_buf(),
        detail: detail.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_reads_rendered_states() {
        for state in [
            State::Creating,
            State::Open,
            State::Closed { commits: 0 },
            State::Closed { commits: u64::MAX },
        ] {
            assert_eq!(parse(&render(state)), Ok(state));
        }
    }

    #[test]
    fn parse_rejects_newer_format() {
        let error = parse("keywheel store\nformat 2\nstate open\n").unwrap_err();
        assert!(error.contains("store format 2"), "{error}");
        assert!(error.contains("newer keywheel"), "{error}");
    }

    #[test]
    fn parse_rejects_foreign_text() {
        let error = parse("some other program\n").unwrap_err();
        assert!(error.contains("does not start with"), "{error}");
    }

    #[test]
    fn parse_rejects_unknown_state() {
        let error = parse("keywheel store\nformat 1\nstate sleeping\n").unwrap_err();
        assert!(error.contains("unknown state"), "{error}");
    }

    #[test]
    fn parse_rejects_invalid_commit_count() {
        let error = parse("keywheel store\nformat 1\nstate closed -3\n").unwrap_err();
        assert!(error.contains("invalid commit count"), "{error}");
    }

    #[test]
    fn parse_rejects_missing_format() {
        let error = parse("keywheel store\n").unwrap_err();
        assert!(error.contains("format <number>"), "{error}");
    }
}
