//! The data path's log records (aya-log: SNAT port exhaustion, a failed conntrack insert, no route)
//! read from the program's ring buffer and written to the agent's own logs under the target
//! `edge_ebpf`, so they reach the same place as everything else (text or JSON, `--log-level`).
//!
//! aya-log speaks the `log` crate's interface; the agent logs with `tracing`. A twenty-line bridge
//! does what `tracing-log` would, without another dependency. The program limits itself to one
//! record a second per condition and CPU, so reading costs nothing while nothing is wrong.

use std::os::fd::AsRawFd;

use aya::Ebpf;
use aya_log::EbpfLogger;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::watch;

/// The program's log records, not yet being read.
pub struct KernelLog {
    logger: EbpfLogger<Bridge>,
}

impl std::fmt::Debug for KernelLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KernelLog").field("fd", &self.logger.as_raw_fd()).finish()
    }
}

/// The log ring buffer could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the data path's log records: {0}; the eBPF object was built without aya-log, rebuild the agent")]
pub struct KernelLogError(String);

impl KernelLog {
    /// Takes the log ring buffer out of the loaded object (before anything else holds it).
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, KernelLogError> {
        let logger = EbpfLogger::init_with_logger(ebpf, Bridge).map_err(|e| KernelLogError(e.to_string()))?;
        Ok(Self { logger })
    }

    /// Writes every waiting record to the agent's logs.
    pub fn read(&mut self) {
        // aya-log panics on a record it cannot decode; the records come from this project's own
        // program, so that would be a build mismatch, and it must not take the agent down.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.logger.flush())).is_err() {
            tracing::error!(
                "a data path log record could not be decoded; the eBPF object and the agent differ, rebuild the agent"
            );
        }
    }

    /// Reads records as they arrive until `shutdown` turns true.
    pub async fn run(self, mut shutdown: watch::Receiver<bool>) {
        // SAFETY: the descriptor is the ring buffer map's, owned by `self.logger`, which the
        // `AsyncFd` owns until it is dropped; nothing replaces or closes it meanwhile.
        let mut fd = match unsafe { AsyncFd::register_with_interest(self, Interest::READABLE) } {
            Ok(fd) => fd,
            Err(e) => {
                tracing::warn!(error = %e, "cannot wait for the data path's log records; they are not shown");
                return;
            }
        };
        loop {
            tokio::select! {
                ready = fd.readable_mut() => match ready {
                    Ok(mut guard) => {
                        guard.get_inner_mut().read();
                        guard.clear_ready();
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "waiting for the data path's log records failed; they are not shown");
                        return;
                    }
                },
                _ = shutdown.wait_for(|stop| *stop) => break,
            }
        }
        // What came in during the shutdown still reaches the logs.
        fd.get_mut().read();
    }
}

impl AsRawFd for KernelLog {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.logger.as_raw_fd()
    }
}

/// aya-log's records into `tracing`, target `edge_ebpf`, at their own level.
struct Bridge;

impl log::Log for Bridge {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        let msg = record.args();
        match record.level() {
            log::Level::Error => tracing::error!(target: "edge_ebpf", "{msg}"),
            log::Level::Warn => tracing::warn!(target: "edge_ebpf", "{msg}"),
            log::Level::Info => tracing::info!(target: "edge_ebpf", "{msg}"),
            log::Level::Debug => tracing::debug!(target: "edge_ebpf", "{msg}"),
            log::Level::Trace => tracing::trace!(target: "edge_ebpf", "{msg}"),
        }
    }

    fn flush(&self) {}
}
