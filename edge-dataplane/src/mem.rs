//! Test double: an in-memory [`KernelMaps`], so the dataplane actor's logic (id allocation and
//! retirement, the two table generations and the flip, writing only the slots that differ,
//! adoption of pinned maps, the sweep) is tested without root. Clones share one state, so a test
//! keeps a handle on what the actor wrote.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use edge_common::{BackendValue, FlowKey, FlowValue, NatKey, NatValue, ServiceKey, ServiceValue, Settings};

use crate::kmaps::{KernelMaps, MapError};

/// What the maps hold.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub settings: Option<Settings>,
    pub backends: Vec<BackendValue>,
    pub services: HashMap<ServiceKey, ServiceValue>,
    pub maglev: HashMap<u32, u32>,
    pub conntrack: HashMap<FlowKey, FlowValue>,
    pub revnat: HashMap<NatKey, NatValue>,
    /// Maglev slots written so far.
    pub slot_writes: usize,
    /// Every service entry written, in order (generation flips).
    pub service_writes: Vec<(ServiceKey, ServiceValue)>,
}

/// In-memory maps with `slots` backend slots.
#[derive(Debug, Clone)]
pub(crate) struct MemMaps(Arc<Mutex<State>>);

impl MemMaps {
    pub fn new(slots: u32) -> Self {
        let state = State { backends: vec![BackendValue::default(); slots as usize], ..Default::default() };
        Self(Arc::new(Mutex::new(state)))
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl KernelMaps for MemMaps {
    fn set_settings(&mut self, settings: Settings) -> Result<(), MapError> {
        self.state().settings = Some(settings);
        Ok(())
    }

    fn backend_slots(&self) -> u32 {
        self.state().backends.len() as u32
    }

    fn backend(&self, id: u32) -> Option<BackendValue> {
        self.state().backends.get(id as usize).copied()
    }

    fn set_backend(&mut self, id: u32, value: BackendValue) -> Result<(), MapError> {
        let mut s = self.state();
        let slot =
            s.backends.get_mut(id as usize).ok_or(MapError { map: "backends", reason: "out of range".into() })?;
        *slot = value;
        Ok(())
    }

    fn services(&self) -> Vec<(ServiceKey, ServiceValue)> {
        self.state().services.iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn service(&self, key: &ServiceKey) -> Option<ServiceValue> {
        self.state().services.get(key).copied()
    }

    fn set_service(&mut self, key: ServiceKey, value: ServiceValue) -> Result<(), MapError> {
        let mut s = self.state();
        s.services.insert(key, value);
        s.service_writes.push((key, value));
        Ok(())
    }

    fn remove_service(&mut self, key: &ServiceKey) -> Result<(), MapError> {
        self.state().services.remove(key);
        Ok(())
    }

    fn set_slot(&mut self, index: u32, backend: u32) -> Result<(), MapError> {
        let mut s = self.state();
        s.maglev.insert(index, backend);
        s.slot_writes += 1;
        Ok(())
    }

    fn for_each_flow(&self, f: &mut dyn FnMut(&FlowKey, &FlowValue)) {
        let flows: Vec<(FlowKey, FlowValue)> = self.state().conntrack.iter().map(|(k, v)| (*k, *v)).collect();
        for (k, v) in &flows {
            f(k, v);
        }
    }

    fn remove_flow(&mut self, key: &FlowKey) {
        self.state().conntrack.remove(key);
    }

    fn remove_nat(&mut self, key: &NatKey) {
        self.state().revnat.remove(key);
    }
}
