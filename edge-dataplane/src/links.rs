//! Attaching the reply-steering TC program toward interfaces found while the agent runs.
//!
//! A backend that appears later (a backends file that changes, and the Consul and DNS sources to
//! come) may sit behind an interface no backend used at start; its replies must pass the TC program
//! there too, or its flows never complete. The actor finds each new backend's egress interface and
//! asks its [`Links`] to make sure the program is attached there. The aya implementation is
//! `loader::LoadedLinks`; the actor's tests run without one.

/// Attaches the TC program on more interfaces.
pub trait Links: Send + std::fmt::Debug {
    /// Makes sure the TC program is attached on `iface`; `Ok(true)` when it attached it now.
    fn ensure_tc(&mut self, iface: &str) -> Result<bool, String>;
}
