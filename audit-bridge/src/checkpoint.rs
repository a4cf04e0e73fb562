//! Durable positions of sources: one small JSON file per key under the state directory,
//! replaced atomically (write to a temporary file, fsync, rename), so a crash leaves
//! either the old or the new checkpoint, never a torn one.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint directory {path}: {error}")]
    Dir {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("checkpoint {path}: {error}")]
    Io {
        path: PathBuf,
        #[source]
        error: std::io::Error,
    },
    #[error("checkpoint {path} is not valid: {error}")]
    Corrupt {
        path: PathBuf,
        #[source]
        error: serde_json::Error,
    },
    #[error("checkpoint {key}: cannot encode: {error}")]
    Encode {
        key: String,
        #[source]
        error: serde_json::Error,
    },
}

/// Where sources keep their positions. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CheckpointStore {
    dir: PathBuf,
}

impl CheckpointStore {
    /// Opens (creating) `dir`.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Self, CheckpointError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|error| CheckpointError::Dir {
            path: dir.clone(),
            error,
        })?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The file that holds `key`. Keys are free text (a source name and a path, a log
    /// group, ...); every byte outside `[A-Za-z0-9._-]` is escaped as `%XX`.
    pub fn path_of(&self, key: &str) -> PathBuf {
        let mut name = String::with_capacity(key.len() + 5);
        for b in key.bytes() {
            if b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-' {
                name.push(char::from(b));
            } else {
                name.push_str(&format!("%{b:02X}"));
            }
        }
        name.push_str(".json");
        self.dir.join(name)
    }

    /// The checkpoint stored under `key`, if any.
    pub fn load<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CheckpointError> {
        let path = self.path_of(key);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(CheckpointError::Io { path, error }),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|error| CheckpointError::Corrupt { path, error })
    }

    /// Stores `value` under `key`, atomically.
    pub fn save<T: Serialize>(&self, key: &str, value: &T) -> Result<(), CheckpointError> {
        let bytes = serde_json::to_vec(value).map_err(|error| CheckpointError::Encode {
            key: key.to_owned(),
            error,
        })?;
        let path = self.path_of(key);
        let tmp = path.with_extension("json.tmp");
        let io = |error| CheckpointError::Io {
            path: path.clone(),
            error,
        };
        let mut f = fs::File::create(&tmp).map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        f.sync_data().map_err(io)?;
        drop(f);
        fs::rename(&tmp, &path).map_err(io)?;
        Ok(())
    }

    /// Stores `value` and logs (rather than returns) a failure: used from
    /// `on_processed` hooks, where the next commit retries.
    pub fn save_logged<T: Serialize>(&self, key: &str, value: &T) {
        if let Err(error) = self.save(key, value) {
            tracing::error!(key, %error, "checkpoint not saved");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_escaping() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path().join("cp")).unwrap();
        assert_eq!(store.load::<u64>("file:/var/log/a b.log").unwrap(), None);
        store.save("file:/var/log/a b.log", &42u64).unwrap();
        assert_eq!(
            store.load::<u64>("file:/var/log/a b.log").unwrap(),
            Some(42)
        );
        let name = store.path_of("file:/var/log/a b.log");
        assert_eq!(
            name.file_name().unwrap().to_str().unwrap(),
            "file%3A%2Fvar%2Flog%2Fa%20b.log.json"
        );
    }

    #[test]
    fn corrupt_checkpoint_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let store = CheckpointStore::open(dir.path()).unwrap();
        std::fs::write(store.path_of("k"), b"{not json").unwrap();
        let err = store.load::<u64>("k").unwrap_err().to_string();
        assert!(err.contains("k.json is not valid"), "{err}");
    }
}
