//! The seam between the dataplane actor and the kernel: the operations the actor and the sweep do
//! on the maps, as a trait (Katran's adapter pattern). The product has one implementation, the
//! pinned aya maps (`pinned`); the actor's logic is tested against an in-memory one (`mem`).

use std::net::{Ipv4Addr, SocketAddrV4};

use edge_common::{BackendValue, FlowKey, FlowValue, NatKey, ServiceKey, ServiceValue, Settings};

/// A map operation failed.
#[derive(Debug, thiserror::Error)]
#[error("writing the eBPF map {map} failed: {reason}")]
pub struct MapError {
    /// The map.
    pub map: &'static str,
    /// The kernel's (or aya's) reason.
    pub reason: String,
}

/// What the dataplane actor reads and writes in the kernel.
pub trait KernelMaps: Send {
    /// Writes the settings value.
    fn set_settings(&mut self, settings: Settings) -> Result<(), MapError>;
    /// Slots of the backends array (id 0 is "none").
    fn backend_slots(&self) -> u32;
    /// The backend in slot `id`.
    fn backend(&self, id: u32) -> Option<BackendValue>;
    /// Writes the backend in slot `id`.
    fn set_backend(&mut self, id: u32, value: BackendValue) -> Result<(), MapError>;
    /// Every service entry.
    fn services(&self) -> Vec<(ServiceKey, ServiceValue)>;
    /// The service entry of `key`.
    fn service(&self, key: &ServiceKey) -> Option<ServiceValue>;
    /// Writes a service entry (this is the flip to a new table generation).
    fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), MapError>;
    /// Removes a service entry.
    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapError>;
    /// Writes one Maglev slot (`index` from `edge_common::table_index`).
    fn set_slot(&mut self, index: u32, backend: u32) -> Result<(), MapError>;
    /// Calls `f` for every conntrack entry.
    fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowValue));
    /// Removes a conntrack entry (gone already is fine).
    fn remove_flow(&mut self, key: &FlowKey);
    /// Removes a reverse-NAT entry (gone already is fine).
    fn remove_nat(&mut self, key: &NatKey);
}

/// An address from the maps' network-order `u32`.
pub(crate) fn ip(be: u32) -> Ipv4Addr {
    Ipv4Addr::from(u32::from_be(be))
}

/// The `ip:port` of a backend value.
pub(crate) fn backend_addr(b: &BackendValue) -> String {
    SocketAddrV4::new(ip(b.addr), u16::from_be(b.port)).to_string()
}
