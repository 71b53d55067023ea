//! The supervisor's [`State`] on disk.
//!
//! One JSON file, `state.json` in the state directory, written atomically: a temporary
//! file in the same directory, fsync, rename over the old one, fsync of the directory.
//! A crash leaves either the old or the new file, never a mix.

use crate::supervisor::State;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

/// The file name inside the state directory.
pub const FILE: &str = "state.json";

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    /// Opens (and creates, mode 0700) the state directory.
    pub fn open(dir: &Path) -> Result<Self, String> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("state directory {}: cannot create it: {e}", dir.display()))?;
        Ok(Self { dir: dir.to_path_buf() })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Reads the state; a missing file is the empty state, a broken one an error that
    /// names it (the daemon refuses to start rather than forget what it installed).
    pub fn load(&self) -> Result<State, String> {
        let path = self.dir.join(FILE);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "{}: unreadable state ({e}): move it away to start from the configuration alone",
                    path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    }

    /// Writes the state atomically.
    pub fn save(&self, state: &State) -> Result<(), String> {
        let path = self.dir.join(FILE);
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let bytes = serde_json::to_vec_pretty(state).map_err(|e| e.to_string())?;
        let write = || -> std::io::Result<()> {
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|e| format!("{}: cannot write state: {e}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::Snapshot;
    use policy::Level;
    use std::collections::BTreeMap;

    #[test]
    fn round_trip_and_missing_and_broken() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = StateDir::open(&tmp.path().join("s")).unwrap();
        assert_eq!(dir.load().unwrap(), State::default());
        let mut state = State {
            rollout: Some(Snapshot { target: Level::Require, peers: BTreeMap::new() }),
            ..State::default()
        };
        state.children.insert("b".into(), vec![(1, 2)]);
        state.removed.push("c".into());
        dir.save(&state).unwrap();
        assert_eq!(dir.load().unwrap(), state);
        fs::write(dir.path().join(FILE), b"{not json").unwrap();
        let err = dir.load().unwrap_err();
        assert!(err.contains("unreadable state") && !err.contains('\n'), "{err}");
    }
}
