//! A directory used as an object store, with the same keys as a bucket.
//!
//! For backups to a mounted disk and for the demo. A key maps to a path under
//! the directory (`/` in a key makes subdirectories). An upload is written to a
//! `.tmp-<random>` file next to its final place, fsynced, renamed into place and
//! the directory fsynced, so an object exists under its key only when complete,
//! even across a crash. Leftover temp files (from a crash) are reported by
//! `list_multipart_uploads` and removed by `abort_multipart`, like S3's
//! unfinished uploads.

use std::io::{self, SeekFrom};
use std::ops::Range;
use std::path::{Component, Path, PathBuf};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};

use super::{
    Body, DeleteReport, ListingSink, MultipartUpload, ObjectInfo, ObjectStore, PrefixListing,
    RemoteError, RemoteErrorKind, UploadOptions, UploadStats,
};

/// Name prefix of in-progress uploads; such files are never objects.
const TMP_PREFIX: &str = ".tmp-";
/// Copy buffer; also how often progress is reported.
const CHUNK: usize = 1 << 20;

/// A directory as an object store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// A store rooted at `root`, which must exist (it is never created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalStore { root: root.into() }
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn err(&self, op: &str, key: Option<&str>, kind: RemoteErrorKind) -> RemoteError {
        RemoteError::new(self.describe(), op, key, kind)
    }

    fn io_err(&self, op: &str, key: &str, e: io::Error) -> RemoteError {
        let kind = if e.kind() == io::ErrorKind::NotFound {
            RemoteErrorKind::NotFound
        } else {
            RemoteErrorKind::Io(e)
        };
        self.err(op, Some(key), kind)
    }

    /// The file for `key`, refusing keys that would escape the directory or
    /// collide with temp files.
    fn path_of(&self, op: &str, key: &str) -> Result<PathBuf, RemoteError> {
        let bad = |why: &str| {
            self.err(
                op,
                Some(key),
                RemoteErrorKind::InvalidKey(format!("{why} (local keys are relative paths)")),
            )
        };
        if key.is_empty() || key.ends_with('/') {
            return Err(bad("empty file name"));
        }
        // Check the raw '/'-separated parts: Path::components would silently
        // drop "." and doubled slashes, making two keys name one file.
        for part in key.split('/') {
            match part {
                "" | "." | ".." => {
                    return Err(bad(
                        "'..', '.', empty parts or a leading '/' are not allowed",
                    ))
                }
                p if p.starts_with(TMP_PREFIX) => {
                    return Err(bad("names starting with .tmp- are reserved"))
                }
                _ => {}
            }
        }
        let rel = Path::new(key);
        Ok(self.root.join(rel))
    }

    fn key_of(&self, path: &Path) -> Option<String> {
        let rel = path.strip_prefix(&self.root).ok()?;
        let parts: Option<Vec<&str>> = rel.components().map(|c| c.as_os_str().to_str()).collect();
        Some(parts?.join("/"))
    }

    /// Every object under the root (or, with `temp`, every temp file).
    fn walk(&self, temp: bool) -> io::Result<Vec<ObjectInfo>> {
        self.walk_from(self.root.clone(), temp)
    }

    /// Every regular file under `start` (a directory under the root) that is a
    /// temp file (`temp`) or an object (`!temp`), in key order. Each file
    /// becomes its [`ObjectInfo`] as it is read: keeping every path and
    /// `Metadata` until the end of the walk cost about 0.4 KiB per object,
    /// 40 MiB for 100k backups (issue 21). Names that are not UTF-8 have no
    /// key and are skipped, with everything below them.
    fn walk_from(&self, start: PathBuf, temp: bool) -> io::Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        self.visit_from(start, temp, &mut |o| out.push(o))?;
        out.sort_unstable_by(|a, b| path_order(&a.key).cmp(path_order(&b.key)));
        Ok(out)
    }

    /// [`Self::walk_from`] in directory order, each file handed to `each` as
    /// it is read.
    fn visit_from(
        &self,
        start: PathBuf,
        temp: bool,
        each: &mut dyn FnMut(ObjectInfo),
    ) -> io::Result<()> {
        let Some(start_key) = self.key_of(&start) else {
            return Ok(());
        };
        let mut dirs = vec![(start, start_key)];
        while let Some((dir, dir_key)) = dirs.pop() {
            for entry in std::fs::read_dir(&dir)? {
                let entry = entry?;
                let ft = entry.file_type()?;
                let file_name = entry.file_name();
                let Some(name) = file_name.to_str() else {
                    continue;
                };
                let key = if dir_key.is_empty() {
                    name.to_string()
                } else {
                    format!("{dir_key}/{name}")
                };
                if ft.is_dir() {
                    dirs.push((entry.path(), key));
                } else if ft.is_file() && name.starts_with(TMP_PREFIX) == temp {
                    each(self.info(key, &entry.metadata()?));
                }
            }
        }
        Ok(())
    }

    /// The root's subdirectories (as `name/` prefixes) and the objects
    /// directly in it.
    fn read_level(&self) -> io::Result<PrefixListing> {
        let mut out = PrefixListing::default();
        for entry in std::fs::read_dir(&self.root)? {
            let entry = entry?;
            let ft = entry.file_type()?;
            let Some(name) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if ft.is_dir() {
                out.prefixes.push(format!("{name}/"));
            } else if ft.is_file() && !name.starts_with(TMP_PREFIX) {
                out.objects.push(self.info(name, &entry.metadata()?));
            }
        }
        out.prefixes.sort();
        out.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }

    /// `work` on a blocking thread (directory walks can be slow); its I/O
    /// error is the store's error for `op`.
    async fn off_thread<T: Send + 'static>(
        &self,
        op: &str,
        work: impl FnOnce(LocalStore) -> io::Result<T> + Send + 'static,
    ) -> Result<T, RemoteError> {
        let this = self.clone();
        tokio::task::spawn_blocking(move || work(this))
            .await
            .map_err(io::Error::other)
            .and_then(|r| r)
            .map_err(|e| self.err(op, None, RemoteErrorKind::Io(e)))
    }

    fn info(&self, key: String, meta: &std::fs::Metadata) -> ObjectInfo {
        ObjectInfo {
            key,
            size: meta.len(),
            storage_class: None,
            last_modified: meta.modified().ok().map(DateTime::<Utc>::from),
            restore: None,
        }
    }

    async fn write_object(
        &self,
        key: &str,
        path: &Path,
        mut body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<u64, RemoteError> {
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        let io = |e| self.io_err("upload", key, e);
        // Directories below the root are made as keys need them; the root
        // itself never (an unmounted disk must not fill the root filesystem).
        if !self.root.is_dir() {
            return Err(self.err(
                "upload",
                Some(key),
                RemoteErrorKind::Config(format!(
                    "{} is not a directory (is the backup disk mounted?); subvault never \
                     creates a local remote's root",
                    self.root.display()
                )),
            ));
        }
        if dir != self.root {
            tokio::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .await
                .map_err(io)?;
        }
        let tmp = TempFile(dir.join(format!("{TMP_PREFIX}{:016x}", fastrand::u64(..))));
        // Owner-only: a backup holds every file of the source, whatever their modes.
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp.0)
            .await
            .map_err(io)?;
        let mut buf = vec![0u8; CHUNK];
        let mut total = 0u64;
        loop {
            let n = body
                .read(&mut buf)
                .await
                .map_err(|e| self.err("upload", Some(key), RemoteErrorKind::Body(e)))?;
            if n == 0 {
                break;
            }
            file.write_all(&buf[..n]).await.map_err(io)?;
            total += n as u64;
            if let Some(p) = &opts.progress {
                p(total);
            }
        }
        file.sync_all().await.map_err(io)?;
        drop(file);
        tokio::fs::rename(&tmp.0, path).await.map_err(io)?;
        tmp.disarm();
        // The rename is durable only once the directory entry is on disk.
        tokio::fs::File::open(&dir)
            .await
            .map_err(io)?
            .sync_all()
            .await
            .map_err(io)?;
        Ok(total)
    }

    /// Removes now-empty directories from `path`'s parent up to (not including)
    /// the root, so deleted nested keys leave no clutter.
    fn prune_empty_dirs(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root || !d.starts_with(&self.root) || std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
}

/// Removes the temp file on drop unless the upload completed (covers errors and
/// a dropped upload future alike).
struct TempFile(PathBuf);

impl TempFile {
    fn disarm(mut self) {
        self.0 = PathBuf::new();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.0.as_os_str().is_empty() {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl ObjectStore for LocalStore {
    fn describe(&self) -> String {
        format!("local:{}", self.root.display())
    }

    fn prefix(&self) -> &str {
        ""
    }

    async fn list(&self) -> Result<Vec<ObjectInfo>, RemoteError> {
        self.off_thread("list", |this| this.walk(false)).await
    }

    async fn list_into<S: ListingSink>(&self, mut sink: S) -> Result<S, RemoteError> {
        self.off_thread("list", move |this| {
            this.visit_from(this.root.clone(), false, &mut |o| sink.object(o))
                .map(|()| sink)
        })
        .await
    }

    async fn list_prefixes(&self) -> Result<PrefixListing, RemoteError> {
        self.off_thread("list", |this| this.read_level()).await
    }

    async fn list_under(&self, sub_prefix: &str) -> Result<Vec<ObjectInfo>, RemoteError> {
        // A sub-prefix ending in '/' is a directory; anything else would need
        // a name filter, which fleets never ask for.
        let dir = match sub_prefix.strip_suffix('/') {
            Some(d) if !d.is_empty() => self.path_of("list", d)?,
            _ => {
                return self.list().await.map(|mut all| {
                    all.retain(|o| o.key.starts_with(sub_prefix));
                    all
                })
            }
        };
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        self.off_thread("list", move |this| this.walk_from(dir, false))
            .await
    }

    async fn upload(
        &self,
        key: &str,
        body: impl AsyncRead + Unpin + Send,
        opts: &UploadOptions,
    ) -> Result<UploadStats, RemoteError> {
        let start = Instant::now();
        let path = self.path_of("upload", key)?;
        if opts.object_lock.is_some() {
            tracing::warn!(
                "{}: object lock is not enforced on a local directory ({key})",
                self.describe()
            );
        }
        let bytes = self.write_object(key, &path, body, opts).await?;
        Ok(UploadStats {
            bytes,
            parts: 0,
            seconds: start.elapsed().as_secs_f64(),
            resumed_bytes: 0,
        })
    }

    async fn get(&self, key: &str, range: Option<Range<u64>>) -> Result<Body, RemoteError> {
        let path = self.path_of("get", key)?;
        let mut file = tokio::fs::File::open(&path)
            .await
            .map_err(|e| self.io_err("get", key, e))?;
        match range {
            None => Ok(Box::new(file)),
            Some(r) => {
                file.seek(SeekFrom::Start(r.start))
                    .await
                    .map_err(|e| self.io_err("get", key, e))?;
                Ok(Box::new(file.take(r.end.saturating_sub(r.start))))
            }
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectInfo, RemoteError> {
        let path = self.path_of("head", key)?;
        let meta = tokio::fs::metadata(&path)
            .await
            .map_err(|e| self.io_err("head", key, e))?;
        if !meta.is_file() {
            return Err(self.err("head", Some(key), RemoteErrorKind::NotFound));
        }
        Ok(self.info(key.to_string(), &meta))
    }

    async fn delete(&self, keys: &[String]) -> Result<DeleteReport, RemoteError> {
        let mut report = DeleteReport::default();
        for key in keys {
            let path = match self.path_of("delete", key) {
                Ok(p) => p,
                Err(e) => {
                    report.failed.push((key.clone(), e.kind.to_string()));
                    continue;
                }
            };
            match tokio::fs::remove_file(&path).await {
                // Like S3: deleting what is not there succeeds.
                Ok(()) => {
                    self.prune_empty_dirs(&path);
                    report.deleted.push(key.clone());
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => report.deleted.push(key.clone()),
                Err(e) => report.failed.push((key.clone(), e.to_string())),
            }
        }
        Ok(report)
    }

    async fn list_multipart_uploads(&self) -> Result<Vec<MultipartUpload>, RemoteError> {
        let files = self
            .off_thread("list temp files", |this| this.walk(true))
            .await?;
        Ok(files
            .into_iter()
            .map(|o| MultipartUpload {
                upload_id: o.key.rsplit('/').next().unwrap_or(&o.key).to_string(),
                initiated: o.last_modified,
                key: o.key,
            })
            .collect())
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), RemoteError> {
        // `key` is the temp file's relative path as listed; the id is its name.
        let bad = || {
            self.err(
                "abort",
                Some(key),
                RemoteErrorKind::InvalidKey(
                    "not a temp file listed by list_multipart_uploads".into(),
                ),
            )
        };
        if !upload_id.starts_with(TMP_PREFIX) || upload_id.contains('/') {
            return Err(bad());
        }
        let rel = Path::new(key);
        if rel.file_name().and_then(|n| n.to_str()) != Some(upload_id)
            || rel.components().any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(bad());
        }
        match tokio::fs::remove_file(self.root.join(rel)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io_err("abort", key, e)),
        }
    }
}

/// A key's bytes in the order of its path, component by component: '/'
/// sorts before every other byte (as `Path`'s ordering has it).
fn path_order(key: &str) -> impl Iterator<Item = u8> + '_ {
    key.bytes().map(|c| if c == b'/' { 0 } else { c })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    async fn read_all(mut r: Body) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).await.unwrap();
        v
    }

    /// Yields `ok` bytes, then an I/O error: a send stream that dies midway.
    fn failing_body(ok: usize) -> crate::test_io::FailingReader {
        crate::test_io::FailingReader::new(vec![7u8; ok], Some(ok), io::ErrorKind::Other)
    }

    #[tokio::test]
    async fn lists_one_level_and_under_a_sub_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let opts = UploadOptions::default();
        for key in ["a/x", "a/deep/y", "b/x", "top"] {
            store.upload(key, &b"12"[..], &opts).await.unwrap();
        }
        let level = store.list_prefixes().await.unwrap();
        assert_eq!(level.prefixes, vec!["a/", "b/"]);
        assert_eq!(level.objects.len(), 1);
        assert_eq!(level.objects[0].key, "top");
        let mut under: Vec<String> = store
            .list_under("a/")
            .await
            .unwrap()
            .into_iter()
            .map(|o| o.key)
            .collect();
        under.sort();
        assert_eq!(under, vec!["a/deep/y", "a/x"]);
        assert!(store.list_under("c/").await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn upload_list_get_range_head_delete() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bucket");
        let store = LocalStore::new(&root);
        // A missing root (an unmounted disk) is an error, and is never created.
        let err = store.list().await.unwrap_err();
        assert!(matches!(*err.kind, RemoteErrorKind::Io(_)), "{err}");
        let err = store
            .upload("k", &b"x"[..], &UploadOptions::default())
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("is the backup disk mounted?"),
            "{err}"
        );
        assert!(!root.exists());
        std::fs::create_dir(&root).unwrap();
        assert!(store.list().await.unwrap().is_empty());

        let body = data(3 * CHUNK + 123);
        let seen = Arc::new(AtomicU64::new(0));
        let s2 = seen.clone();
        let opts = UploadOptions {
            progress: Some(Arc::new(move |n| s2.store(n, Ordering::SeqCst))),
            ..Default::default()
        };
        let stats = store.upload("a/b/obj1", &body[..], &opts).await.unwrap();
        assert_eq!(stats.bytes, body.len() as u64);
        assert_eq!(seen.load(Ordering::SeqCst), body.len() as u64);
        store
            .upload("top", &b"x"[..], &UploadOptions::default())
            .await
            .unwrap();

        let listed = store.list().await.unwrap();
        let keys: Vec<_> = listed.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, ["a/b/obj1", "top"]);
        assert_eq!(listed[0].size, body.len() as u64);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &str| {
            std::fs::metadata(root.join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(
            (mode("a/b/obj1"), mode("top"), mode("a/b")),
            (0o600, 0o600, 0o700)
        );
        assert_eq!(listed[0].storage_class, None);

        assert_eq!(
            read_all(store.get("a/b/obj1", None).await.unwrap()).await,
            body
        );
        let r = 1000..(2 * CHUNK as u64 + 5);
        assert_eq!(
            read_all(store.get("a/b/obj1", Some(r.clone())).await.unwrap()).await,
            body[r.start as usize..r.end as usize]
        );
        assert_eq!(store.head("top").await.unwrap().size, 1);
        assert!(store.head("nope").await.unwrap_err().is_not_found());
        assert!(store.get("nope", None).await.err().unwrap().is_not_found());

        let report = store
            .delete(&["a/b/obj1".into(), "missing".into(), "../escape".into()])
            .await
            .unwrap();
        assert_eq!(report.deleted, ["a/b/obj1", "missing"]);
        assert_eq!(report.failed.len(), 1);
        assert_eq!(report.failed[0].0, "../escape");
        assert!(!dir.path().join("bucket/a").exists(), "empty dirs pruned");
        assert_eq!(store.list().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn failed_body_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        let err = store
            .upload("k", failing_body(3 * CHUNK), &UploadOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(*err.kind, RemoteErrorKind::Body(_)), "{err}");
        assert!(err.to_string().contains(" k: "), "names the key: {err}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(store.list_multipart_uploads().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn overwrite_is_atomic_replace() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path());
        store
            .upload("k", &b"old"[..], &UploadOptions::default())
            .await
            .unwrap();
        let _ = store
            .upload("k", failing_body(10), &UploadOptions::default())
            .await
            .unwrap_err();
        assert_eq!(read_all(store.get("k", None).await.unwrap()).await, b"old");
        store
            .upload("k", &b"new"[..], &UploadOptions::default())
            .await
            .unwrap();
        assert_eq!(read_all(store.get("k", None).await.unwrap()).await, b"new");
    }

    #[tokio::test]
    async fn leftover_temp_files_are_hidden_listed_and_abortable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/.tmp-0123"), b"partial").unwrap();
        let store = LocalStore::new(dir.path());
        assert!(store.list().await.unwrap().is_empty());
        let pending = store.list_multipart_uploads().await.unwrap();
        assert_eq!(
            pending,
            [MultipartUpload {
                key: "sub/.tmp-0123".to_string(),
                upload_id: ".tmp-0123".to_string(),
                initiated: pending[0].initiated,
            }]
        );
        assert!(store.abort_multipart("sub/x", ".tmp-0123").await.is_err());
        store
            .abort_multipart(&pending[0].key, &pending[0].upload_id)
            .await
            .unwrap();
        assert!(store.list_multipart_uploads().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn keys_cannot_escape_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path().join("root"));
        for key in [
            "../x",
            "/etc/passwd",
            "a/../../x",
            "",
            "a/",
            ".tmp-1",
            "a/./b",
        ] {
            let e = store
                .upload(key, &b"x"[..], &UploadOptions::default())
                .await
                .unwrap_err();
            assert!(
                matches!(*e.kind, RemoteErrorKind::InvalidKey(_)),
                "{key}: {e}"
            );
        }
        assert!(!dir.path().join("x").exists());
    }
}
