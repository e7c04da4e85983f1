//! Wiring: builds every component from a [`Config`], starts them, and stops them in order.
//!
//! Start order: TLS material and the backends files are checked first (bad input fails before any
//! socket opens), then the data-plane decision, one monitor (discovery + probes) and one balancer
//! per service, the listeners, the admin API. Shutdown: stop accepting, let connections finish for
//! up to `--drain-timeout`, then return.
//!
//! Services: `--listen` and `--listen-tcp` serve the first service. In eBPF mode every service
//! with a VIP is a `ServiceInput` of the dataplane actor; otherwise each TCP VIP gets a userspace
//! TCP listener bound to its own service's selector (`plane::fallback_listeners`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use edge_core::balance::{self, BalancerConfig, BalancerHandle, Plane};
use edge_core::discovery::consul::{self, Endpoint};
use edge_core::discovery::dns::{self, TokioResolver};
use edge_core::discovery::{Discover, FileError, FileSource, Fixed};
use edge_core::health::{GrpcCheck, HealthCheck, HttpCheck, Monitor, MonitorConfig, MonitorHandle, TcpCheck, UdpCheck};
use edge_dataplane::{
    Actor, ActorConfig, DataplaneStats, LoadedLinks, PinnedMaps, ServiceInput, StartError as EbpfError, SweepConfig,
};
use edge_proxy::{
    Admission, Listener, Loads, ProxyStats, ServiceTraffic, TlsError, WorkerContext, WorkerSockets, acceptors,
    allowed_cpus, bind_group, spawn_worker, tls_acceptor,
};

use crate::admin::{self, Admin};
use crate::config::{CheckKind, Config, Origin, ServiceConfig};
use crate::metrics::{Metrics, Sources};
use crate::plane::{DataplaneStatus, fallback_listeners};
use crate::service::ServiceHandle;

/// Why the agent could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// TLS files.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The backends file.
    #[error("invalid --backends-file: {0}")]
    BackendsFile(#[from] FileError),
    /// The backends file of a `[[service]]`.
    #[error("invalid backends-file of [[service]] '{service}': {source}")]
    ServiceBackendsFile {
        /// The service.
        service: String,
        /// The error.
        source: FileError,
    },
    /// The TLS settings for backends could not be made.
    #[error(transparent)]
    BackendTls(#[from] edge_core::tls::TlsSetupError),
    /// A Consul or DNS source could not be set up (TLS to Consul, the resolver configuration).
    #[error("{0}")]
    Discovery(String),
    /// The eBPF data plane could not start (`--mode ebpf`).
    #[error(transparent)]
    Ebpf(#[from] EbpfError),
    /// The eBPF maps could not be opened or written at start.
    #[error("{0}")]
    Maps(String),
    /// Worker threads could not start.
    #[error("cannot start {count} worker threads: {source}; lower --workers")]
    Workers {
        /// How many were asked for.
        count: usize,
        /// The error.
        source: std::io::Error,
    },
    /// A listener could not bind.
    #[error("cannot listen on --{flag} {addr}: {source}; pick a free address or stop the process using it")]
    Bind {
        /// The flag.
        flag: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
    /// An earlier eBPF agent's programs still steer a VIP the userspace proxy would serve.
    #[error("{0}")]
    Leftover(String),
    /// The configuration has no service.
    #[error("no service to run; give --backend or --backends-file, or [[service]] tables in --config")]
    NoService,
    /// The userspace listener on a `[[service]]` VIP could not bind.
    #[error(
        "cannot listen on {addr}, the vip of [[service]] '{service}' (the userspace proxy serves it): {source}; \
         pick a free address or stop the process using it"
    )]
    BindService {
        /// The service.
        service: String,
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: std::io::Error,
    },
}

/// A running agent.
#[derive(Debug)]
pub struct AgentHandle {
    /// Bound HTTP listener addresses (ports resolved).
    pub http_addrs: Vec<SocketAddr>,
    /// Bound TCP listener addresses.
    pub tcp_addrs: Vec<SocketAddr>,
    /// Bound admin address.
    pub admin_addr: Option<SocketAddr>,
    /// The first service's backend state.
    pub monitor: MonitorHandle,
    /// The first service's strategy and selector.
    pub balancer: BalancerHandle,
    /// Every service, in configuration order.
    pub services: Vec<ServiceHandle>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// The data-plane decision.
    pub dataplane: DataplaneStatus,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

async fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| StartError::Bind { flag, addr, source })
}

/// What the Consul and DNS sources of every service share: one Consul endpoint, one resolver.
#[derive(Debug, Default)]
struct Shared {
    consul: Option<Endpoint>,
    resolver: Option<Arc<TokioResolver>>,
}

impl Shared {
    /// Sets up what the services' sources need (TLS to Consul, the resolver), once.
    fn new(cfg: &Config) -> Result<Self, StartError> {
        let c = &cfg.discovery.consul;
        let consul = if cfg.services.iter().any(|s| s.discovery.consul.is_some()) {
            let tls = c
                .https
                .then(|| {
                    let identity = c.identity.as_ref().map(|(cert, key)| (cert.as_path(), key.as_path()));
                    edge_core::tls::client_config(edge_core::tls::CONSUL, c.ca_cert.as_deref(), identity, &[])
                })
                .transpose()
                .map_err(|e| StartError::Discovery(e.to_string()))?;
            Some(Endpoint { authority: c.authority.clone(), tls, token: c.token.clone() })
        } else {
            None
        };
        let resolver = if cfg.services.iter().any(|s| !s.discovery.dns.is_empty()) {
            Some(dns::resolver(cfg.discovery.dns_server).map_err(|e| StartError::Discovery(e.to_string()))?)
        } else {
            None
        };
        Ok(Self { consul, resolver })
    }
}

/// Opens a service's discovery sources (a backends file is read now, so a bad one stops the start).
async fn sources(s: &ServiceConfig, cfg: &Config, shared: &Shared) -> Result<Vec<Box<dyn Discover>>, StartError> {
    let mut out: Vec<Box<dyn Discover>> = Vec::new();
    if let (Some(c), Some(endpoint)) = (&s.discovery.consul, &shared.consul) {
        let query = consul::Query {
            service: c.service.clone(),
            tags: c.tags.clone(),
            datacenter: c.datacenter.clone(),
            stale: cfg.discovery.consul.stale,
            wait: cfg.discovery.consul.wait,
        };
        out.push(Box::new(consul::ConsulSource::new(endpoint.clone(), query)));
    }
    if let Some(resolver) = &shared.resolver {
        for q in &s.discovery.dns {
            out.push(Box::new(dns::DnsSource::new(resolver.clone(), q.clone())));
        }
    }
    if !s.backends.is_empty() {
        out.push(Box::new(Fixed::new(s.backends.clone())));
    }
    if let Some(path) = &s.backends_file {
        let p = path.clone();
        let src = tokio::task::spawn_blocking(move || FileSource::open(&p))
            .await
            .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        let src = match (src, &s.origin) {
            (Ok(src), _) => src,
            (Err(e), Origin::TopLevel) => return Err(StartError::BackendsFile(e)),
            (Err(source), Origin::File(_)) => {
                return Err(StartError::ServiceBackendsFile { service: s.name.clone(), source });
            }
        };
        out.push(Box::new(src));
    }
    Ok(out)
}

/// The TLS settings for backends spoken to over TLS: from `--backend-ca` (else the system's roots)
/// and `--backend-cert`/`--backend-key`. Without those flags and without a system bundle there are
/// none, which is an error only when a configured backend needs them; a backend that discovery
/// adds later fails its connections with that reason instead.
fn backend_tls(cfg: &Config) -> Result<Option<Arc<rustls::ClientConfig>>, StartError> {
    let files = &cfg.backend_tls;
    let identity = files.identity.as_ref().map(|(c, k)| (c.as_path(), k.as_path()));
    match edge_core::tls::client_config(edge_core::tls::BACKENDS, files.ca.as_deref(), identity, &[b"http/1.1"]) {
        Ok(c) => Ok(Some(c)),
        Err(e) => {
            let needed = *files != crate::config::BackendTls::default()
                || cfg.services.iter().any(|s| s.backends.iter().any(|b| b.tls.is_some()));
            if needed {
                return Err(e.into());
            }
            tracing::debug!(error = %e, "no TLS settings for backends");
            Ok(None)
        }
    }
}

/// Starts the agent.
pub async fn start(cfg: Config) -> Result<AgentHandle, StartError> {
    if cfg.services.is_empty() {
        // Config::validate never returns this; a hand-built Config might.
        return Err(StartError::NoService);
    }
    let tls = cfg.tls.as_ref().map(|t| tls_acceptor(&t.cert, &t.key)).transpose()?;
    let backend_tls = backend_tls(&cfg)?;
    let shared = Shared::new(&cfg)?;
    let mut all_sources = Vec::with_capacity(cfg.services.len());
    for s in &cfg.services {
        all_sources.push(sources(s, &cfg, &shared).await?);
    }
    let decide_cfg = cfg.clone();
    let (mut dataplane, loaded) = tokio::task::spawn_blocking(move || DataplaneStatus::decide(&decide_cfg))
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()))?;
    if dataplane.mode == Plane::Userspace {
        let left = crate::plane::Leftover::find();
        if let Some(msg) = crate::plane::leftover_conflict(&cfg, &left) {
            return Err(StartError::Leftover(msg));
        }
        if !left.links.is_empty() {
            tracing::warn!(
                links = %left.links.join(", "),
                vips = %left.vips.join(", "),
                "an earlier eBPF agent's programs are still attached (steering none of this agent's VIPs); \
                 `edge-agent cleanup` detaches them"
            );
            dataplane.leftover = Some(left);
        }
    }
    tracing::info!(mode = dataplane.mode.as_str(), reason = %dataplane.reason, "data plane chosen");
    for a in &dataplane.attachments {
        let note = a.note.as_deref().unwrap_or("");
        tracing::info!(iface = %a.iface, hook = %a.hook, adopted = a.adopted, note, "eBPF program attached");
    }
    let fallback = if loaded.is_none() { fallback_listeners(&cfg) } else { Vec::new() };

    let checker = |check: &CheckKind| -> Arc<dyn HealthCheck> {
        match check {
            CheckKind::Tcp => Arc::new(TcpCheck),
            CheckKind::Http(path) => Arc::new(HttpCheck::new(path.clone()).with_tls(backend_tls.clone())),
            CheckKind::Udp => Arc::new(UdpCheck),
            CheckKind::Grpc(service) => Arc::new(GrpcCheck::new(service.clone()).with_tls(backend_tls.clone())),
        }
    };
    // A service's strategy must suit the plane that carries it: the kernel for a VIP in eBPF mode,
    // the userspace proxy otherwise (a top-level service without a VIP serves --listen even then).
    let serving_plane = |s: &ServiceConfig| match (dataplane.mode, s.vip) {
        (Plane::Ebpf, Some(_)) => Plane::Ebpf,
        _ => Plane::Userspace,
    };
    let several = cfg.services.len() > 1;
    let mut services: Vec<ServiceHandle> = Vec::with_capacity(cfg.services.len());
    for (s, sources) in cfg.services.iter().zip(all_sources) {
        // With several services, their monitors' and balancers' logs carry the service's name.
        let span = if several { tracing::info_span!("service", name = %s.name) } else { tracing::Span::none() };
        let (monitor, balancer) = span.in_scope(|| {
            let h = &s.health.config;
            tracing::info!(service = %s.name, probe = ?s.health.check, port = h.port, interval = ?h.interval,
                fast_interval = ?h.fast_interval, timeout = ?h.timeout, rise = h.rise, fall = h.fall,
                detection_within = ?h.detection_bound(), "health checks");
            let monitor = Monitor::spawn(
                MonitorConfig {
                    health: s.health.config.clone(),
                    outlier: cfg.outlier.clone(),
                    panic_threshold: cfg.panic_threshold,
                    drain_timeout: cfg.drain_timeout,
                },
                checker(&s.health.check),
                sources,
            );
            let balancer = balance::spawn(
                BalancerConfig { table_size: cfg.table_size, plane: serving_plane(s) },
                s.strategy.clone(),
                monitor.subscribe(),
                monitor.subscribe_ready(),
            );
            (monitor, balancer)
        });
        let traffic = Arc::new(ServiceTraffic::new(cfg.retry_budget));
        services.push(ServiceHandle {
            name: s.name.clone(),
            vip: s.vip,
            monitor,
            balancer,
            traffic,
            listeners: Vec::new(),
        });
    }

    let (shutdown, shutdown_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut dataplane_stats = None;
    if let Some(mut loaded) = loaded {
        let e = &cfg.ebpf;
        if let Some(log) = loaded.kernel_log.take() {
            tasks.spawn(log.run(shutdown_rx.clone()));
        }
        let maps = PinnedMaps::open().map_err(|e| StartError::Maps(e.to_string()))?;
        let actor_cfg = ActorConfig {
            table_size: cfg.table_size,
            snat_ports: e.snat_ports,
            sweep: SweepConfig::new(e.udp_timeout, e.tcp_timeout),
            cleanup: e.cleanup,
            drain_timeout: cfg.drain_timeout,
            clock: loaded.clock,
        };
        let inputs = services
            .iter()
            .filter_map(|s| {
                Some(ServiceInput {
                    name: s.name.clone(),
                    vip: s.vip?,
                    backends: s.monitor.subscribe(),
                    ready: s.monitor.subscribe_ready(),
                    strategy: s.balancer.subscribe(),
                })
            })
            .collect();
        let stats = Arc::new(DataplaneStats::default());
        // The object (programs and map descriptors) lives as long as the actor runs: it holds it,
        // to attach the TC program toward backends that appear behind new interfaces.
        let actor = Actor::new(maps, actor_cfg, inputs, stats.clone())
            .map_err(|e| StartError::Maps(e.to_string()))?
            .with_links(Box::new(LoadedLinks::new(loaded)));
        dataplane_stats = Some(stats);
        let shutdown = shutdown_rx.clone();
        tasks.spawn(actor.run(shutdown));
    }
    let workers = cfg.workers.max(1);
    let proxy_stats = Arc::new(ProxyStats::default());
    let loads = Loads::new(workers, cfg.proxy.max_connections, proxy_stats.clone());
    tasks.spawn(edge_proxy::trim_after_closes(loads.clone(), shutdown_rx.clone()));
    let mut per_worker: Vec<WorkerSockets> =
        (0..workers).map(|_| WorkerSockets { http: Vec::new(), tcp: Vec::new() }).collect();
    let mut http_addrs = Vec::new();
    let mut tcp_addrs = Vec::new();
    for addr in &cfg.listen {
        let (bound, socks) =
            bind_group(*addr, workers).map_err(|source| StartError::Bind { flag: "listen", addr: *addr, source })?;
        tracing::info!(addr = %bound, tls = tls.is_some(), workers, "http listener ready");
        http_addrs.push(bound);
        services[0].listeners.push(bound);
        let (selector, traffic) = (services[0].balancer.selector(), services[0].traffic.clone());
        for (w, acceptor) in per_worker.iter_mut().zip(acceptors(socks, &loads)) {
            w.http.push((Listener { acceptor, selector: selector.clone(), traffic: traffic.clone() }, tls.clone()));
        }
    }
    // --listen-tcp serves the first service; each fallback listener its own service's VIP.
    let tcp_listeners =
        cfg.listen_tcp.iter().map(|a| (0, *a, false)).chain(fallback.iter().map(|(i, a)| (*i, *a, true)));
    for (i, addr, is_fallback) in tcp_listeners {
        let (bound, socks) = bind_group(addr, workers).map_err(|source| match &cfg.services[i].origin {
            Origin::File(_) if is_fallback => {
                StartError::BindService { service: cfg.services[i].name.clone(), addr, source }
            }
            _ => StartError::Bind { flag: "listen-tcp", addr, source },
        })?;
        if is_fallback {
            tracing::info!(service = %services[i].name, addr = %bound, "the userspace proxy serves the VIP as a TCP listener");
        }
        tracing::info!(addr = %bound, workers, "tcp listener ready");
        tcp_addrs.push(bound);
        services[i].listeners.push(bound);
        let (selector, traffic) = (services[i].balancer.selector(), services[i].traffic.clone());
        for (w, acceptor) in per_worker.iter_mut().zip(acceptors(socks, &loads)) {
            w.tcp.push(Listener { acceptor, selector: selector.clone(), traffic: traffic.clone() });
        }
    }
    let admin_listener = match cfg.admin {
        Some(a) => Some(bind("admin", a).await?),
        None => None,
    };
    let admission = Admission::new(cfg.proxy.max_requests);
    let ctx = WorkerContext {
        stats: proxy_stats.clone(),
        admission: admission.clone(),
        cfg: cfg.proxy.clone(),
        backend_tls: backend_tls.clone(),
        shutdown: shutdown_rx.clone(),
        drain_timeout: cfg.drain_timeout,
        cpus: if cfg.cpu_pinning { allowed_cpus() } else { Vec::new() },
    };
    let mut threads = Vec::new();
    for (i, sockets) in per_worker.into_iter().enumerate() {
        let t =
            spawn_worker(i, sockets, ctx.clone()).map_err(|source| StartError::Workers { count: workers, source })?;
        threads.push(t);
    }
    // Outside ECS there is nothing to read; inside, a failed read must not stop the agent.
    let ecs = match crate::ecs::read().await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(error = %e, "running without the ECS task metadata");
            None
        }
    };
    if let Some(t) = &ecs {
        tracing::info!(cluster = %t.cluster, task = %t.task_arn, zone = %t.availability_zone, "running in an ECS task");
    }
    // The kernel's counters exist only where the eBPF data plane runs.
    let kernel = dataplane_stats.as_ref().map(|_| {
        Arc::new(crate::kernel::Kernel::new(
            services.iter().filter_map(|s| s.vip.map(|v| (s.name.clone(), v))).collect(),
        ))
    });
    // The kernel monitor, like the counters, exists only where the eBPF data plane runs.
    let monitor = dataplane_stats.as_ref().map(|_| Arc::new(crate::kernel_events::KernelEvents::default()));
    if let Some(m) = &monitor {
        tasks.spawn(m.clone().run(shutdown_rx.clone()));
    }
    let metrics = Arc::new(Metrics::new(Sources {
        services: services.clone(),
        proxy: proxy_stats,
        admission,
        plane: dataplane.mode,
        ebpf_capable: dataplane.ebpf_capable(),
        dataplane: dataplane_stats.clone(),
        ecs: ecs.clone(),
        kernel: kernel.clone(),
    }));
    let mut admin_addr = None;
    if let Some(l) = admin_listener {
        let addr = l.local_addr().ok();
        admin_addr = addr;
        let admin = Arc::new(Admin {
            services: services.clone(),
            metrics: metrics.clone(),
            dataplane: dataplane.clone(),
            token: cfg.admin_token.clone(),
            listen: http_addrs.clone(),
            listen_tcp: tcp_addrs.clone(),
            tls: tls.is_some(),
            started: Instant::now(),
            read_timeout: cfg.proxy.header_read_timeout,
            dataplane_stats: dataplane_stats.clone(),
            kernel,
            monitor: monitor.clone(),
            ecs,
        });
        if let Some(addr) = addr {
            tracing::info!(%addr, token = cfg.admin_token.is_some(), "admin api ready");
        }
        tasks.spawn(admin::serve(l, admin, shutdown_rx.clone()));
    }
    Ok(AgentHandle {
        http_addrs,
        tcp_addrs,
        admin_addr,
        monitor: services[0].monitor.clone(),
        balancer: services[0].balancer.clone(),
        services,
        metrics,
        dataplane,
        shutdown,
        tasks,
        threads,
    })
}

impl AgentHandle {
    /// Waits until every service is ready for traffic (`/readyz`): its first probe round is done
    /// and its selector built from it.
    pub async fn wait_ready(&self) {
        for s in &self.services {
            s.balancer.wait_ready().await;
        }
    }

    /// Stops accepting, lets open connections finish (each worker waits up to the drain timeout),
    /// then returns.
    pub async fn shutdown(mut self) {
        let _ = self.shutdown.send(true);
        while self.tasks.join_next().await.is_some() {}
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> Result<(), StartError> {
    let agent = start(cfg).await?;
    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; letting open ones finish");
    agent.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
