//! The pinned state under `/sys/fs/bpf/edge`: mounting bpffs when it is missing, where each map
//! and link lives, adopting a pinned link (swapping the program behind it in one step), and
//! removing everything (`edge-agent cleanup`, `--cleanup`).

use std::ffi::CString;
use std::path::{Path, PathBuf};

use edge_common::PIN_DIR;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Pinned-state trouble.
#[derive(Debug, thiserror::Error)]
pub enum PinError {
    /// bpffs is not mounted and could not be.
    #[error("cannot mount bpffs on /sys/fs/bpf: {0}; mount it (mount -t bpf bpf /sys/fs/bpf) or run as root")]
    Mount(std::io::Error),
    /// A filesystem operation on the pin folder failed.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The folder for pinned maps.
pub fn map_dir() -> PathBuf {
    PathBuf::from(PIN_DIR)
}

/// The folder for pinned links.
pub fn link_dir() -> PathBuf {
    Path::new(PIN_DIR).join(format!("links_v{}", edge_common::LAYOUT_VERSION))
}

/// The pin of the link of program `kind` on `iface`: "tc", or "xdp-native" / "xdp-generic" (the
/// XDP mode is in the name, so that an agent configured for another mode replaces the link
/// instead of adopting it).
pub fn link_path(kind: &str, iface: &str) -> PathBuf {
    link_dir().join(format!("{kind}_{iface}"))
}

/// Set when [`prepare`] had to mount bpffs itself.
static MOUNTED_HERE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether the pins outlive this process. They do on the host's own bpffs, and on one this process
/// mounted in the host's mount namespace. They do not when this process mounted bpffs inside a
/// mount namespace of its own (`ip netns exec` gives every command one, with a fresh /sys): that
/// mount, and with it every pin and link, goes away when the process exits.
pub fn outlive_agent() -> bool {
    if !MOUNTED_HERE.load(std::sync::atomic::Ordering::Relaxed) {
        return true;
    }
    let ns = |p: &str| std::fs::read_link(p).ok();
    ns("/proc/self/ns/mnt").is_some_and(|me| ns("/proc/1/ns/mnt").is_some_and(|init| init == me))
}

/// Makes sure bpffs is mounted on /sys/fs/bpf and the pin folders exist.
pub fn prepare() -> Result<(), PinError> {
    if !is_bpffs(Path::new("/sys/fs/bpf")) {
        MOUNTED_HERE.store(true, std::sync::atomic::Ordering::Relaxed);
        let c = |s: &str| CString::new(s).unwrap_or_default();
        let (src, dst, fs) = (c("bpf"), c("/sys/fs/bpf"), c("bpf"));
        // SAFETY: valid NUL-terminated strings; no data argument.
        let rc = unsafe { libc::mount(src.as_ptr(), dst.as_ptr(), fs.as_ptr(), 0, std::ptr::null()) };
        if rc != 0 {
            return Err(PinError::Mount(std::io::Error::last_os_error()));
        }
    }
    for d in [map_dir(), link_dir()] {
        std::fs::create_dir_all(&d).map_err(|source| PinError::Io { path: d.clone(), source })?;
    }
    Ok(())
}

fn is_bpffs(p: &Path) -> bool {
    let Ok(c) = CString::new(p.as_os_str().as_encoded_bytes()) else { return false };
    // SAFETY: statfs fills the zeroed struct; the path is NUL-terminated.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC
    }
}

/// Removes every pin under [`PIN_DIR`]: the links (which detaches the programs) and the maps.
/// Returns what was removed.
pub fn cleanup() -> Result<Vec<PathBuf>, PinError> {
    let mut removed = Vec::new();
    remove_tree(Path::new(PIN_DIR), &mut removed)?;
    Ok(removed)
}

fn remove_tree(dir: &Path, removed: &mut Vec<PathBuf>) -> Result<(), PinError> {
    fn io(path: &Path) -> impl Fn(std::io::Error) -> PinError + '_ {
        move |source| PinError::Io { path: path.to_path_buf(), source }
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(dir)(e)),
    };
    // Links first (they hold the programs that use the maps), then everything else.
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort_by_key(|p| !p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("links")));
    for p in paths {
        if p.is_dir() {
            remove_tree(&p, removed)?;
        } else {
            std::fs::remove_file(&p).map_err(io(&p))?;
            removed.push(p);
        }
    }
    std::fs::remove_dir(dir).map_err(io(dir))?;
    Ok(())
}
