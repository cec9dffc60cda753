//! Cross-process file locks.
//!
//! A [`FileLock`] is an exclusive advisory lock (`flock` on Linux) on a file. Locks belong to the
//! open file, so two acquirers in the same process exclude each other just like two processes do,
//! and the kernel releases the lock when its holder dies, even by SIGKILL.

use std::fs::{self, File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

use provisioner_core::{Error, Result};

/// An exclusive lock on a file, held until dropped.
#[derive(Debug)]
pub struct FileLock {
    file: File,
    path: PathBuf,
}

impl FileLock {
    /// Locks `path`, creating it and its parent directories. When another holder has it,
    /// `on_wait` is called once and the call waits (off the async runtime) until the lock is free.
    pub async fn acquire(path: &Path, on_wait: impl FnOnce()) -> Result<FileLock> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).map_err(|e| Error::io("create", parent, e))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| Error::io("lock", path, e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                on_wait();
                let owned = path.to_path_buf();
                let locked = tokio::task::spawn_blocking(move || file.lock().map(|()| file))
                    .await
                    .map_err(|e| Error::data("lock", owned.clone(), e))?;
                let file = locked.map_err(|e| Error::io("lock", &owned, e))?;
                return Ok(FileLock { file, path: owned });
            }
            Err(TryLockError::Error(error)) => return Err(Error::io("lock", path, error)),
        }
        Ok(FileLock {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The locked file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        // Closing the file would release the lock as well; unlocking first makes it explicit.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn acquirers_of_the_same_file_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("locks/nested/key.lock");

        let mut first_waited = false;
        let first = FileLock::acquire(&path, || first_waited = true)
            .await
            .unwrap();
        assert!(!first_waited);
        assert!(path.exists());
        assert_eq!(first.path(), path);

        let released = Arc::new(AtomicBool::new(false));
        let waited = Arc::new(AtomicBool::new(false));
        let second = tokio::spawn({
            let path = path.clone();
            let released = released.clone();
            let waited = waited.clone();
            async move {
                let lock = FileLock::acquire(&path, || waited.store(true, Ordering::SeqCst))
                    .await
                    .unwrap();
                // The first holder marks the release before dropping its lock.
                assert!(released.load(Ordering::SeqCst));
                drop(lock);
            }
        });

        // Hold the lock until the second acquirer has announced that it waits.
        while !waited.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(!second.is_finished());
        released.store(true, Ordering::SeqCst);
        drop(first);
        second.await.unwrap();

        // Free again: no waiting.
        let mut third_waited = false;
        let _third = FileLock::acquire(&path, || third_waited = true)
            .await
            .unwrap();
        assert!(!third_waited);
    }

    #[tokio::test]
    async fn errors_name_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, "").unwrap();
        let path = blocker.join("key.lock");
        let error = FileLock::acquire(&path, || {}).await.unwrap_err();
        assert!(
            error.to_string().contains(&blocker.display().to_string()),
            "{error}"
        );
    }
}
