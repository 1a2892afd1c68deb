//! Writing an evidence bundle as a .tar.gz (the layout is `sallyport_audit::bundle`'s): every
//! file is hashed as it is written, then `manifest.json` lists them and `manifest.sig` signs it.
//! Blocking I/O: run it in `spawn_blocking`.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::Path;

use sallyport_audit::AuditRecord;
use sallyport_audit::bundle::{self as layout, FileEntry, HeadLine, Manifest};
use sha2::{Digest, Sha256};

pub mod viewer;

/// What goes into a bundle, gathered from the store.
pub struct Contents {
    /// The one directory every path of the archive is under.
    pub root: String,
    /// The manifest without its `files`.
    pub manifest: Manifest,
    pub events: Vec<AuditRecord>,
    pub links: Vec<AuditRecord>,
    pub heads: Vec<HeadLine>,
    /// `keys.txt`.
    pub keys: String,
    /// The recordings, read through the `open` given to [`write`].
    pub recordings: Vec<crate::store::Recording>,
}

/// A recording opened for the bundle: its size and its bytes.
pub struct Opened {
    pub size: u64,
    pub reader: Box<dyn Read + Send>,
}

/// A written bundle: the archive (an unlinked temporary file, at its start), its size and the
/// SHA-256 of its manifest.
pub struct Written {
    pub file: File,
    pub size: u64,
    pub manifest_sha256: String,
    pub manifest: Manifest,
}

/// Hashes what passes through it (and keeps a copy, when asked).
struct Hashing<R> {
    inner: R,
    sha: Sha256,
    bytes: u64,
    kept: Option<Vec<u8>>,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.bytes += n as u64;
        if let Some(k) = &mut self.kept {
            k.extend_from_slice(&buf[..n]);
        }
        Ok(n)
    }
}

fn header(size: u64, mtime: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o600);
    h.set_mtime(mtime);
    h.set_uid(0);
    h.set_gid(0);
    h.set_entry_type(tar::EntryType::Regular);
    h
}

fn jsonl<T: serde::Serialize>(items: &[T]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for i in items {
        serde_json::to_writer(&mut out, i)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Write `c` as a .tar.gz into a temporary file in `tmp_dir`; `sign` signs the manifest's bytes
/// (an armored SSHSIG); `open` opens a recording's bytes (from wherever they are kept).
pub fn write(
    c: Contents,
    sign: &dyn Fn(&[u8]) -> anyhow::Result<String>,
    open: &dyn Fn(&crate::store::Recording) -> anyhow::Result<Opened>,
    tmp_dir: &Path,
) -> anyhow::Result<Written> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = tmp_dir.join(format!(".export-{}.tar.gz", uuid::Uuid::new_v4()));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    // Gone from the directory at once; the open file is streamed and then closed.
    std::fs::remove_file(&tmp)?;
    let mtime = c.manifest.created_ms / 1000;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut files: Vec<FileEntry> = Vec::new();
    let mut add = |tar: &mut tar::Builder<_>, path: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let mut h = header(bytes.len() as u64, mtime);
        tar.append_data(&mut h, format!("{}/{path}", c.root), bytes)?;
        files.push(FileEntry {
            path: path.into(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
        });
        Ok(())
    };
    // Recordings, streamed and hashed as they go; kept whole in memory only for the viewer, and
    // only when small.
    const VIEWER_MAX: u64 = 4 << 20;
    let mut shown: Vec<(String, Vec<u8>)> = Vec::new();
    let mut recording_files = Vec::new();
    for rec in &c.recordings {
        let id = &rec.session;
        let Opened { size, reader } = open(rec)?;
        let mut h = header(size, mtime);
        let mut r = Hashing {
            inner: reader.take(size),
            sha: Sha256::new(),
            bytes: 0,
            kept: (size <= VIEWER_MAX).then(Vec::new),
        };
        let name = layout::recording_path(id);
        tar.append_data(&mut h, format!("{}/{name}", c.root), &mut r)?;
        anyhow::ensure!(
            r.bytes == size,
            "the recording {id} changed while it was exported"
        );
        recording_files.push(FileEntry {
            path: name,
            size,
            sha256: hex::encode(r.sha.finalize()),
        });
        if let Some(bytes) = r.kept {
            shown.push((id.clone(), bytes));
        }
    }
    add(&mut tar, layout::EVENTS, &jsonl(&c.events)?)?;
    add(&mut tar, layout::LINKS, &jsonl(&c.links)?)?;
    add(&mut tar, layout::SIGNATURES, &jsonl(&c.heads)?)?;
    add(&mut tar, layout::KEYS, c.keys.as_bytes())?;
    add(
        &mut tar,
        layout::INDEX,
        viewer::index_html(&c, &shown).as_bytes(),
    )?;
    files.extend(recording_files);
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut manifest = c.manifest.clone();
    manifest.files = files;
    let mut bytes = serde_json::to_vec_pretty(&manifest)?;
    bytes.push(b'\n');
    let sig = sign(&bytes)?;
    let mut h = header(bytes.len() as u64, mtime);
    tar.append_data(
        &mut h,
        format!("{}/{}", c.root, layout::MANIFEST),
        bytes.as_slice(),
    )?;
    let mut h = header(sig.len() as u64, mtime);
    tar.append_data(
        &mut h,
        format!("{}/{}", c.root, layout::MANIFEST_SIG),
        sig.as_bytes(),
    )?;
    let gz = tar.into_inner()?;
    let mut file = gz.finish()?;
    file.flush()?;
    let size = file.stream_position()?;
    file.rewind()?;
    Ok(Written {
        file,
        size,
        manifest_sha256: hex::encode(Sha256::digest(&bytes)),
        manifest,
    })
}
