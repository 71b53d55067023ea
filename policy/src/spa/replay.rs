//! The replay cache: the `(timestamp, nonce)` of every knock admitted within the
//! window, and a floor below which every knock counts as a possible replay.
//!
//! A replay carries the same sealed timestamp and nonce as its original, so the pair
//! identifies it. An entry older than `now - window` is dropped: a replay of it is stale
//! anyway. Dropping it raises the floor to its timestamp, so that even a clock stepped
//! back cannot make it acceptable again. The cache is bounded: when full, the oldest
//! entry goes and the floor rises to it (a knock older than the floor is refused, which
//! under normal clocks only touches knocks that are nearly stale).
//!
//! On disk (when a path is given) it is an append-only file: an 8-byte magic
//! `IKMSPAR1`, then 25-byte records `kind (1 = seen, 2 = floor) || timestamp in ms
//! (u64 big-endian) || nonce (16 bytes, zero for a floor)`. A knock is admitted only
//! after its record is written and synced, so no admitted knock is forgotten by a crash
//! or restart. At start the file is read back and rewritten compactly (to a temporary
//! file, synced, then renamed over the old one), and again whenever it has grown to
//! twice the live entries. A torn last record (a crash mid-write, before the knock was
//! admitted) is dropped with a log line; any other damage refuses to start.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use tracing::warn;

use super::SpaError;
use super::packet::KNOCK_NONCE_LEN;

const MAGIC: &[u8; 8] = b"IKMSPAR1";
const RECORD_LEN: usize = 25;
const KIND_SEEN: u8 = 1;
const KIND_FLOOR: u8 = 2;
/// Rewrite the file once it holds this many records more than the live entries.
const COMPACT_SLACK: usize = 1024;

type Entry = (u64, [u8; KNOCK_NONCE_LEN]);

pub(crate) struct ReplayCache {
    seen: BTreeSet<Entry>,
    /// Knocks at or below this timestamp (ms) are refused; none before anything was
    /// forgotten.
    floor: Option<u64>,
    window_ms: u64,
    capacity: usize,
    store: Option<Store>,
}

struct Store {
    path: PathBuf,
    file: File,
    /// Records in the file.
    records: usize,
}

impl ReplayCache {
    /// An empty cache, or the one persisted at `path` (created if absent), as of `now_ms`.
    pub(crate) fn open(
        path: Option<&Path>,
        window_ms: u64,
        capacity: usize,
        now_ms: u64,
    ) -> Result<Self, SpaError> {
        let mut cache = Self {
            seen: BTreeSet::new(),
            floor: None,
            window_ms,
            capacity: capacity.max(1),
            store: None,
        };
        let Some(path) = path else { return Ok(cache) };
        let io = |source| SpaError::Io { path: path.to_path_buf(), source };
        match File::open(path) {
            Ok(mut f) => {
                let mut bytes = Vec::new();
                f.read_to_end(&mut bytes).map_err(io)?;
                cache.load(path, &bytes)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        cache.prune(now_ms);
        let file = rewrite(path, cache.floor, &cache.seen).map_err(io)?;
        let records = cache.seen.len() + usize::from(cache.floor.is_some());
        cache.store = Some(Store { path: path.to_path_buf(), file, records });
        Ok(cache)
    }

    fn load(&mut self, path: &Path, bytes: &[u8]) -> Result<(), SpaError> {
        let corrupt = |what: &str| SpaError::ReplayFile {
            path: path.to_path_buf(),
            problem: what.to_owned(),
        };
        let Some(records) = bytes.strip_prefix(MAGIC) else {
            return Err(corrupt("it does not start with IKMSPAR1, so it is not a replay cache"));
        };
        let chunks = records.chunks_exact(RECORD_LEN);
        if !chunks.remainder().is_empty() {
            warn!(
                path = %path.display(),
                "SPA replay cache: dropping a torn last record ({} bytes) left by a crash",
                chunks.remainder().len()
            );
        }
        for r in chunks {
            let mut ts = [0u8; 8];
            ts.copy_from_slice(&r[1..9]);
            let ts = u64::from_be_bytes(ts);
            let mut nonce = [0u8; KNOCK_NONCE_LEN];
            nonce.copy_from_slice(&r[9..]);
            match r[0] {
                KIND_SEEN => self.insert_mem((ts, nonce)),
                KIND_FLOOR => self.raise_floor(ts),
                k => return Err(corrupt(&format!("a record of unknown kind {k}"))),
            }
        }
        Ok(())
    }

    /// Whether a knock with this timestamp and nonce may be new.
    pub(crate) fn is_replay(&self, ts: u64, nonce: &[u8; KNOCK_NONCE_LEN]) -> bool {
        self.floor.is_some_and(|f| ts <= f) || self.seen.contains(&(ts, *nonce))
    }

    /// Records a knock (after [`ReplayCache::is_replay`] said no), on disk first. On an
    /// error the knock is still remembered in memory, and must be refused.
    pub(crate) fn record(
        &mut self,
        ts: u64,
        nonce: [u8; KNOCK_NONCE_LEN],
        now_ms: u64,
    ) -> io::Result<()> {
        self.prune(now_ms);
        self.insert_mem((ts, nonce));
        let Some(store) = &mut self.store else { return Ok(()) };
        store.file.write_all(&record(KIND_SEEN, ts, &nonce))?;
        store.file.sync_data()?;
        store.records += 1;
        if store.records > 2 * self.seen.len() + COMPACT_SLACK {
            // The new record is already safe in the old file; a failed rewrite leaves it.
            match rewrite(&store.path, self.floor, &self.seen) {
                Ok(file) => {
                    store.file = file;
                    store.records = self.seen.len() + usize::from(self.floor.is_some());
                }
                Err(e) => warn!(
                    path = %store.path.display(),
                    "SPA replay cache: could not compact ({e}); still appending to the old file"
                ),
            }
        }
        Ok(())
    }

    fn insert_mem(&mut self, e: Entry) {
        self.seen.insert(e);
        while self.seen.len() > self.capacity {
            if let Some((ts, _)) = self.seen.pop_first() {
                self.raise_floor(ts);
            }
        }
    }

    fn raise_floor(&mut self, ts: u64) {
        self.floor = Some(self.floor.map_or(ts, |f| f.max(ts)));
    }

    /// Drops entries older than the window; the floor rises to the newest dropped.
    fn prune(&mut self, now_ms: u64) {
        let horizon = now_ms.saturating_sub(self.window_ms);
        while let Some(&(ts, _)) = self.seen.first() {
            if ts >= horizon {
                break;
            }
            self.seen.pop_first();
            self.raise_floor(ts);
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.seen.len()
    }
}

fn record(kind: u8, ts: u64, nonce: &[u8; KNOCK_NONCE_LEN]) -> [u8; RECORD_LEN] {
    let mut r = [0u8; RECORD_LEN];
    r[0] = kind;
    r[1..9].copy_from_slice(&ts.to_be_bytes());
    r[9..].copy_from_slice(nonce);
    r
}

/// Writes the whole cache to a temporary file beside `path`, syncs it, renames it over
/// `path`, syncs the folder, and returns the new file open for appending.
fn rewrite(path: &Path, floor: Option<u64>, seen: &BTreeSet<Entry>) -> io::Result<File> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let mut buf = Vec::with_capacity(MAGIC.len() + RECORD_LEN * (seen.len() + 1));
    buf.extend_from_slice(MAGIC);
    if let Some(floor) = floor {
        buf.extend_from_slice(&record(KIND_FLOOR, floor, &[0; KNOCK_NONCE_LEN]));
    }
    for (ts, nonce) in seen {
        buf.extend_from_slice(&record(KIND_SEEN, *ts, nonce));
    }
    {
        let mut f =
            OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        f.write_all(&buf)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
        File::open(dir)?.sync_all()?;
    }
    OpenOptions::new().append(true).open(path)
}
