//! Where the bytes of session recordings live, behind [`RecordingStore`]: a file in this
//! broker's data_dir ([`DataDir`], what one broker alone reads) or rows of the store
//! ([`Database`], what every replica on the same database reads). `[recordings] storage` picks
//! where new recordings go; a stored recording is read from where its row says it is
//! ([`Recordings::holding`]), whatever the setting is now.
//!
//! Every reader (the recordings API, the console's replay, the evidence export) goes through
//! here: nothing else opens a recording's file.

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::task::{Context, Poll};

use axum::body::HttpBody;
use axum::http::StatusCode;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, ReadBuf};

use crate::auth::random_id;
use crate::config::Storage;
use crate::error::{ApiError, ApiResult};
use crate::store::{Recording, Store};

/// A boxed future, so that [`RecordingStore`] can be used as `dyn`.
pub type Fut<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A recording's bytes, read in order.
pub type Reader = Pin<Box<dyn AsyncRead + Send>>;

/// A stored recording opened for reading: its bytes and how many there are.
pub struct Opened {
    pub size: u64,
    pub reader: Reader,
}

/// A recording's bytes read from blocking code (a `spawn_blocking` task: the evidence export).
pub struct Blocking {
    reader: Reader,
    runtime: tokio::runtime::Handle,
}

impl Blocking {
    pub fn new(reader: Reader, runtime: tokio::runtime::Handle) -> Blocking {
        Blocking { reader, runtime }
    }
}

impl std::io::Read for Blocking {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        self.runtime.block_on(self.reader.read(buf))
    }
}

/// An upload streamed into a spool file of this broker's data_dir (0600), with its size and
/// SHA-256. The file is removed when this is dropped, unless it was moved into place.
pub struct Received {
    path: PathBuf,
    pub size: u64,
    pub sha256: String,
}

impl Drop for Received {
    fn drop(&mut self) {
        // Gone already when it was moved into place.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What became of a received recording.
pub enum Kept {
    /// Stored under its session id.
    Stored,
    /// The session has a recording already (a retry, or another upload): the stored row, to
    /// compare. Nothing was changed, except that the missing file of an identical recording
    /// kept in the data_dir was put in place.
    Existing(Box<Recording>),
}

/// Where recordings' bytes are kept.
pub trait RecordingStore: Send + Sync {
    /// What the rows of the recordings it keeps say (`recordings.storage`).
    fn storage(&self) -> Storage;

    /// Stream an upload into a spool file, at most `limit` bytes (413 past it), hashing it.
    fn receive<'a>(
        &'a self,
        cluster: &'a str,
        session: &'a str,
        body: axum::body::Body,
        limit: u64,
    ) -> Fut<'a, ApiResult<Received>>;

    /// Keep `received` as the recording `row` (whose `storage` and `path` this sets): the row and
    /// the bytes are both there afterwards, or neither (a crash in between leaves at worst a
    /// row whose file a retry puts in place, data_dir only).
    fn keep<'a>(&'a self, row: Recording, received: Received) -> Fut<'a, ApiResult<Kept>>;

    /// Whether the bytes of stored recording `r` are here, whole.
    fn exists<'a>(&'a self, r: &'a Recording) -> Fut<'a, anyhow::Result<bool>>;

    /// The bytes of stored recording `r`; `None` when they are not here.
    fn open<'a>(&'a self, r: &'a Recording) -> Fut<'a, anyhow::Result<Option<Opened>>>;
}

/// The recording stores of a broker: where new recordings go, and both kinds to read from.
pub struct Recordings {
    storing: Storage,
    data_dir: DataDir,
    database: Database,
}

impl Recordings {
    pub fn new(storing: Storage, data_dir: &Path, store: Store) -> Recordings {
        Recordings {
            storing,
            data_dir: DataDir {
                data_dir: data_dir.to_path_buf(),
                store: store.clone(),
            },
            database: Database {
                store,
                spool: data_dir.join("recordings").join(".incoming"),
            },
        }
    }

    fn of(&self, storage: Storage) -> &dyn RecordingStore {
        match storage {
            Storage::DataDir => &self.data_dir,
            Storage::Database => &self.database,
        }
    }

    /// Where new recordings go (`[recordings] storage`).
    pub fn storing(&self) -> &dyn RecordingStore {
        self.of(self.storing)
    }

    /// Where stored recording `r` is.
    pub fn holding(&self, r: &Recording) -> &dyn RecordingStore {
        self.of(r.storage)
    }

    pub async fn exists(&self, r: &Recording) -> anyhow::Result<bool> {
        self.holding(r).exists(r).await
    }

    pub async fn open(&self, r: &Recording) -> anyhow::Result<Option<Opened>> {
        self.holding(r).open(r).await
    }

    /// The whole of stored recording `r`, at most `limit` bytes (`None`: not here).
    pub async fn read(&self, r: &Recording, limit: u64) -> anyhow::Result<Option<Vec<u8>>> {
        use tokio::io::AsyncReadExt;
        let Some(o) = self.open(r).await? else {
            return Ok(None);
        };
        anyhow::ensure!(
            o.size <= limit,
            "the recording is {} bytes, more than the {limit} read at once",
            o.size
        );
        let mut out = Vec::with_capacity(usize::try_from(o.size).unwrap_or(0));
        o.reader.take(limit).read_to_end(&mut out).await?;
        Ok(Some(out))
    }
}

/// Where a recording lives, relative to data_dir: built only from the cluster (a checked name
/// from the store) and the checked session id.
pub fn rel_path(cluster: &str, session: &str) -> PathBuf {
    PathBuf::from("recordings")
        .join(cluster)
        .join(format!("{session}.cast"))
}

fn too_large(limit: u64) -> ApiError {
    ApiError::Rejected(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the recording is larger than max_recording_bytes ({limit} bytes)"),
    )
}

/// Make `dir` (0700, with its parents).
async fn make_dir(dir: &Path) -> ApiResult<()> {
    use std::os::unix::fs::DirBuilderExt;
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
    })
    .await
    .map_err(|e| ApiError::Internal(e.into()))?
    .map_err(|e| ApiError::Internal(e.into()))
}

/// Stream `body` into a new 0600 file in `dir`, at most `limit` bytes; its size and SHA-256.
async fn spool(
    dir: &Path,
    session: &str,
    body: axum::body::Body,
    limit: u64,
) -> ApiResult<Received> {
    use tokio::io::AsyncWriteExt;
    make_dir(dir).await?;
    let path = dir.join(format!(".{session}.{}.part", random_id()));
    let mut file = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    // From here on, dropping it removes the file.
    let mut received = Received {
        path,
        size: 0,
        sha256: String::new(),
    };
    let mut body = body;
    let mut hasher = Sha256::new();
    loop {
        let frame = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await;
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| {
            ApiError::Rejected(
                StatusCode::BAD_REQUEST,
                format!("reading the recording failed: {e}"),
            )
        })?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        received.size += data.len() as u64;
        if received.size > limit {
            return Err(too_large(limit));
        }
        hasher.update(&data);
        file.write_all(&data)
            .await
            .map_err(|e| ApiError::Internal(e.into()))?;
    }
    file.sync_all()
        .await
        .map_err(|e| ApiError::Internal(e.into()))?;
    received.sha256 = hex::encode(hasher.finalize());
    Ok(received)
}

async fn sync_dir(dir: &Path) {
    if let Ok(d) = tokio::fs::File::open(dir).await {
        let _ = d.sync_all().await;
    }
}

/// Recordings as files in this broker's data_dir: `recordings/<cluster>/<session>.cast`.
pub struct DataDir {
    data_dir: PathBuf,
    /// Where the rows are.
    store: Store,
}

impl DataDir {
    /// The file of recording `r`, when its cluster is a plain name.
    fn file(&self, r: &Recording) -> Option<PathBuf> {
        crate::directory::valid_uid(&r.cluster)
            .then(|| self.data_dir.join(rel_path(&r.cluster, &r.session)))
    }
}

impl RecordingStore for DataDir {
    fn storage(&self) -> Storage {
        Storage::DataDir
    }

    fn receive<'a>(
        &'a self,
        cluster: &'a str,
        session: &'a str,
        body: axum::body::Body,
        limit: u64,
    ) -> Fut<'a, ApiResult<Received>> {
        Box::pin(async move {
            // Next to where it goes, so that moving it there is a rename.
            let dir = self.data_dir.join("recordings").join(cluster);
            spool(&dir, session, body, limit).await
        })
    }

    fn keep<'a>(&'a self, row: Recording, received: Received) -> Fut<'a, ApiResult<Kept>> {
        Box::pin(async move {
            let rel = rel_path(&row.cluster, &row.session);
            let path = self.data_dir.join(&rel);
            let row = Recording {
                path: rel.to_string_lossy().into_owned(),
                storage: Storage::DataDir,
                ..row
            };
            let dir = path.parent().map(Path::to_path_buf).ok_or_else(|| {
                ApiError::Internal(anyhow::anyhow!("recording path has no parent"))
            })?;
            // Claim the session id first, then move the file into place: of two uploads only the
            // one whose row was stored decides the contents.
            let store = &self.store;
            match store.insert_recording(&row).await {
                Ok(()) => {}
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    let Some(old) = store.recording(&row.session).await? else {
                        return Err(ApiError::Internal(anyhow::anyhow!(
                            "the recording of {} was there, and is gone",
                            row.session
                        )));
                    };
                    // The same bytes again (a retry): put the file in place if an earlier upload
                    // stopped between claiming the id and the rename.
                    if old.storage == Storage::DataDir
                        && old.cluster == row.cluster
                        && old.sha256 == received.sha256
                        && old.size == received.size
                        && tokio::fs::metadata(&path).await.is_err()
                    {
                        tokio::fs::rename(&received.path, &path)
                            .await
                            .map_err(|e| ApiError::Internal(e.into()))?;
                        sync_dir(&dir).await;
                    }
                    return Ok(Kept::Existing(Box::new(old)));
                }
                Err(e) => return Err(e.into()),
            }
            tokio::fs::rename(&received.path, &path)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            sync_dir(&dir).await;
            Ok(Kept::Stored)
        })
    }

    fn exists<'a>(&'a self, r: &'a Recording) -> Fut<'a, anyhow::Result<bool>> {
        Box::pin(async move {
            Ok(match self.file(r) {
                Some(p) => tokio::fs::metadata(&p).await.is_ok(),
                None => false,
            })
        })
    }

    fn open<'a>(&'a self, r: &'a Recording) -> Fut<'a, anyhow::Result<Option<Opened>>> {
        Box::pin(async move {
            let Some(path) = self.file(r) else {
                return Ok(None);
            };
            let file = match tokio::fs::File::open(&path).await {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let size = file.metadata().await?.len();
            Ok(Some(Opened {
                size,
                reader: Box::pin(file),
            }))
        })
    }
}

/// Recordings as rows of the store (`recording_chunks`), read by every replica.
pub struct Database {
    store: Store,
    /// Where uploads are spooled before they go into the database (this broker's disk).
    spool: PathBuf,
}

impl RecordingStore for Database {
    fn storage(&self) -> Storage {
        Storage::Database
    }

    fn receive<'a>(
        &'a self,
        _cluster: &'a str,
        session: &'a str,
        body: axum::body::Body,
        limit: u64,
    ) -> Fut<'a, ApiResult<Received>> {
        Box::pin(async move { spool(&self.spool, session, body, limit).await })
    }

    fn keep<'a>(&'a self, row: Recording, received: Received) -> Fut<'a, ApiResult<Kept>> {
        Box::pin(async move {
            let row = Recording {
                path: String::new(),
                storage: Storage::Database,
                ..row
            };
            let mut file = tokio::fs::File::open(&received.path)
                .await
                .map_err(|e| ApiError::Internal(e.into()))?;
            match self
                .store
                .insert_recording_with_bytes(&row, &mut file)
                .await
            {
                Ok(()) => Ok(Kept::Stored),
                Err(sqlx::Error::Database(db)) if db.is_unique_violation() => {
                    match self.store.recording(&row.session).await? {
                        Some(old) => Ok(Kept::Existing(Box::new(old))),
                        None => Err(ApiError::Internal(anyhow::anyhow!(
                            "the recording of {} was there, and is gone",
                            row.session
                        ))),
                    }
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn exists<'a>(&'a self, r: &'a Recording) -> Fut<'a, anyhow::Result<bool>> {
        Box::pin(async move { Ok(self.store.recording_bytes_held(&r.session).await? == r.size) })
    }

    fn open<'a>(&'a self, r: &'a Recording) -> Fut<'a, anyhow::Result<Option<Opened>>> {
        Box::pin(async move {
            if !self.exists(r).await? {
                return Ok(None);
            }
            Ok(Some(Opened {
                size: r.size,
                reader: Box::pin(Chunks {
                    store: self.store.clone(),
                    session: r.session.clone(),
                    size: r.size,
                    next: 0,
                    read: 0,
                    buf: Vec::new(),
                    pos: 0,
                    pending: None,
                    done: false,
                }),
            }))
        })
    }
}

/// Reads a recording kept in the database one chunk at a time (never more than one chunk in
/// memory); fails when the chunks do not add up to the recording's size.
struct Chunks {
    store: Store,
    session: String,
    size: u64,
    next: u64,
    read: u64,
    buf: Vec<u8>,
    pos: usize,
    pending: Option<Fut<'static, io::Result<Option<Vec<u8>>>>>,
    done: bool,
}

impl AsyncRead for Chunks {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.pos < this.buf.len() {
                let n = out.remaining().min(this.buf.len() - this.pos);
                out.put_slice(&this.buf[this.pos..this.pos + n]);
                this.pos += n;
                return Poll::Ready(Ok(()));
            }
            if this.done {
                return Poll::Ready(Ok(()));
            }
            let fut = this.pending.get_or_insert_with(|| {
                let store = this.store.clone();
                let session = this.session.clone();
                let seq = this.next;
                Box::pin(async move {
                    store
                        .recording_chunk(&session, seq)
                        .await
                        .map_err(io::Error::other)
                })
            });
            let chunk = match fut.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(r) => r,
            };
            this.pending = None;
            match chunk? {
                Some(data) => {
                    this.next += 1;
                    this.read += data.len() as u64;
                    this.buf = data;
                    this.pos = 0;
                }
                None => {
                    this.done = true;
                    if this.read != this.size {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            format!(
                                "recording {}: the database holds {} bytes of {}",
                                this.session, this.read, this.size
                            ),
                        )));
                    }
                }
            }
        }
    }
}
