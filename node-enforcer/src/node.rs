//! The running node enforcer: reads the ring buffer, keeps the process table, attributes
//! events to containers and pods, evaluates the `syscall` rules, writes Falco JSON alerts,
//! hands alerts and actions to the engine's sink, and enforces what the kernel cannot decide
//! alone (isolation of a matching pod's cgroup, a kill after a match).

use std::collections::{HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{ActionRecord, Sink};
use policies::{Alert, Event, RuleSet, Scope, SyscallEvent};
use tokio_util::sync::CancellationToken;

use crate::cgroups::CgroupResolver;
use crate::events::KernelEvent;
use crate::falco::Enricher;
use crate::loader::{Enforcer, LoadError, LoaderOptions};
use crate::metrics::Snapshot;
use crate::pods::PodCache;
use crate::posture::{self, RulePosture};
use crate::prefilter::{self, Definitions, WriteFilter};
use crate::proctable::ProcTable;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("reading /proc for the process table: {0}")]
    Proc(std::io::Error),
    #[error("applying rule \"{rule}\" to the kernel: {what}")]
    Apply { rule: String, what: String },
    #[error("metrics endpoint {addr}: {error}")]
    Metrics {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("starting the event reader: {0}")]
    Thread(std::io::Error),
}

/// Default path prefixes whose read-only opens are reported (Falco's sensitive files and
/// the credentials its stable rules watch).
pub const SENSITIVE_PREFIXES: &[&str] = &[
    "/etc/shadow",
    "/etc/gshadow",
    "/etc/sudoers",
    "/etc/pam.conf",
    "/etc/pam.d/",
    "/etc/security/",
    "/root/.ssh/",
    "/root/.aws/",
    "/etc/kubernetes/",
    "/var/run/secrets/",
    "/run/secrets/",
];

/// How to run.
pub struct NodeOptions {
    pub loader: LoaderOptions,
    /// The rules; `None` runs visibility only (no alerts).
    pub rules: Option<Arc<RuleSet>>,
    /// The rule files' macros and lists, for the write-open prefilter; without them a rule
    /// that uses a macro is not reducible and every write-open is reported.
    pub definitions: Definitions,
    pub hostname: String,
    pub node_name: String,
    /// Pod metadata; filled by a watch when a cluster is configured.
    pub pods: PodCache,
    /// Falco JSON alert lines go here (stdout, a file).
    pub alerts: Option<Box<dyn Write + Send>>,
    /// Every event, for tests and tools.
    pub tap: Option<mpsc::Sender<SyscallEvent>>,
    pub metrics_addr: Option<SocketAddr>,
    /// How often the reader drains the ring buffer when no wakeup comes.
    pub poll_ms: u64,
}

impl std::fmt::Debug for NodeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeOptions")
            .field("loader", &self.loader)
            .field("node_name", &self.node_name)
            .field("metrics_addr", &self.metrics_addr)
            .finish_non_exhaustive()
    }
}

impl NodeOptions {
    pub fn new(node_name: impl Into<String>) -> Self {
        let hostname = hostname_string();
        Self {
            loader: LoaderOptions::default(),
            rules: None,
            definitions: Definitions::default(),
            hostname,
            node_name: node_name.into(),
            pods: PodCache::new(),
            alerts: None,
            tap: None,
            metrics_addr: None,
            poll_ms: 10,
        }
    }
}

/// The host's name.
pub fn hostname_string() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// A running enforcer. Dropping it stops the reader; the pinned kernel side stays.
pub struct Node {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    snapshot: Arc<Mutex<Snapshot>>,
    pub metrics_addr: Option<SocketAddr>,
    attachments: Vec<crate::loader::Attachment>,
    capture: crate::loader::SyscallCapture,
    adopted: bool,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node")
            .field("adopted", &self.adopted)
            .finish_non_exhaustive()
    }
}

impl Node {
    /// Loads (or re-adopts) the kernel side, applies the rules' kernel deny entries and
    /// starts the reader thread.
    pub fn start(mut opts: NodeOptions, sink: Arc<dyn Sink>) -> Result<Node, NodeError> {
        let mut enforcer = Enforcer::load(&opts.loader)?;
        let caps = enforcer.capabilities().clone();
        for prefix in SENSITIVE_PREFIXES {
            enforcer.add_sensitive_prefix(prefix)?;
        }
        let write_filter = prefilter::compute(opts.rules.as_deref(), &opts.definitions);
        enforcer.set_write_filter(&write_filter)?;
        match &write_filter {
            WriteFilter::All { reasons } => {
                tracing::info!(reasons = %reasons.join("; "), "write-open prefilter off: every write-open is reported");
            }
            WriteFilter::Paths { prefixes, suffixes } => {
                tracing::info!(
                    prefixes = prefixes.len(),
                    suffixes = suffixes.len(),
                    "write-open prefilter on"
                );
            }
        }
        let cgroups = CgroupResolver::new(enforcer.cgroup_root());
        for id in cgroups.kubepods_ids() {
            enforcer.watch_cgroup(id)?;
        }
        let postures = match &opts.rules {
            Some(r) => posture::compute(r, &caps),
            None => Vec::new(),
        };
        for p in &postures {
            for w in &p.warnings {
                tracing::warn!(rule = %p.rule, mode = %p.mode, warning = %w, "rule cannot be enforced as asked");
            }
        }
        let rules = opts.rules.clone();
        let mut scoped: Vec<(RulePosture, Scope)> = Vec::new();
        if let Some(r) = &rules {
            for p in postures.iter().filter(|p| !p.exec_deny.is_empty()) {
                let scope = r
                    .rules()
                    .iter()
                    .find(|x| x.name == p.rule)
                    .map(|x| x.tether.scope.clone())
                    .unwrap_or_default();
                if scope.is_unrestricted() {
                    for name in &p.exec_deny {
                        enforcer
                            .deny_exec(0, name, p.rule_id)
                            .map_err(|e| NodeError::Apply {
                                rule: p.rule.clone(),
                                what: e.to_string(),
                            })?;
                    }
                } else {
                    scoped.push((p.clone(), scope));
                }
            }
        }
        let procs = ProcTable::from_proc(Path::new("/proc"), enforcer.cgroup_root())
            .map_err(NodeError::Proc)?;
        let enricher = Enricher::new(
            procs,
            cgroups,
            opts.pods.clone(),
            opts.hostname.clone(),
            opts.node_name.clone(),
        );
        let snapshot = Arc::new(Mutex::new(Snapshot {
            postures: postures.clone(),
            capabilities: Some(caps),
            ..Snapshot::default()
        }));
        let metrics_addr = match opts.metrics_addr {
            Some(addr) => Some(
                crate::metrics::serve(addr, snapshot.clone())
                    .map_err(|error| NodeError::Metrics { addr, error })?,
            ),
            None => None,
        };
        let ring = enforcer.take_ring().ok_or_else(|| {
            NodeError::Load(LoadError::Map {
                map: "events".into(),
                what: "ring buffer already taken".into(),
            })
        })?;
        let stop = Arc::new(AtomicBool::new(false));
        let attachments = enforcer.attachments().to_vec();
        let capture = enforcer.syscall_capture().clone();
        let adopted = enforcer.adopted();
        let mut pipeline = Pipeline {
            enforcer,
            enricher,
            rules,
            postures: postures.into_iter().map(|p| (p.rule.clone(), p)).collect(),
            scoped,
            seen_cgroups: HashSet::new(),
            isolated: HashSet::new(),
            sink,
            alerts: opts.alerts.take(),
            tap: opts.tap.take(),
            snapshot: snapshot.clone(),
            hostname: opts.hostname.clone(),
        };
        let stop2 = stop.clone();
        let poll_ms = i32::try_from(opts.poll_ms).unwrap_or(10);
        let thread = std::thread::Builder::new()
            .name("tether-node-events".into())
            .spawn(move || pipeline.run(ring, &stop2, poll_ms))
            .map_err(NodeError::Thread)?;
        Ok(Node {
            stop,
            thread: Some(thread),
            snapshot,
            metrics_addr,
            attachments,
            capture,
            adopted,
        })
    }

    pub fn snapshot(&self) -> Snapshot {
        self.snapshot.lock().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn attachments(&self) -> &[crate::loader::Attachment] {
        &self.attachments
    }

    /// How syscalls are captured.
    pub fn syscall_capture(&self) -> &crate::loader::SyscallCapture {
        &self.capture
    }

    /// True when the pins of an earlier run were re-adopted.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// Stops the reader after it drained what is queued. The kernel side stays pinned.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Blocks until `shutdown` is cancelled, then stops.
    pub async fn run_until(mut self, shutdown: CancellationToken) {
        shutdown.cancelled().await;
        self.shutdown();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown();
    }
}

struct Pipeline {
    enforcer: Enforcer,
    enricher: Enricher,
    rules: Option<Arc<RuleSet>>,
    postures: HashMap<String, RulePosture>,
    scoped: Vec<(RulePosture, Scope)>,
    seen_cgroups: HashSet<u64>,
    isolated: HashSet<u64>,
    sink: Arc<dyn Sink>,
    alerts: Option<Box<dyn Write + Send>>,
    tap: Option<mpsc::Sender<SyscallEvent>>,
    snapshot: Arc<Mutex<Snapshot>>,
    hostname: String,
}

#[derive(Default)]
struct Tally {
    records: HashMap<&'static str, u64>,
    decode_errors: u64,
    events: u64,
    alerts: HashMap<String, u64>,
    actions: HashMap<String, u64>,
    action_errors: u64,
}

impl Pipeline {
    fn run(
        &mut self,
        mut ring: aya::maps::RingBuf<aya::maps::MapData>,
        stop: &AtomicBool,
        poll_ms: i32,
    ) {
        let mut tally = Tally::default();
        let mut last_publish = Instant::now();
        loop {
            let stopping = stop.load(Ordering::SeqCst);
            let mut n = 0usize;
            while let Some(item) = ring.next() {
                n += 1;
                match crate::events::decode(&item) {
                    Ok(ev) => {
                        drop(item);
                        self.handle(&ev, &mut tally);
                    }
                    Err(e) => {
                        tally.decode_errors += 1;
                        tracing::warn!(error = %e, "undecodable ring buffer record");
                    }
                }
            }
            if let Some(a) = self.alerts.as_mut() {
                let _ = a.flush();
            }
            if stopping || last_publish.elapsed() >= Duration::from_millis(500) {
                self.publish(&tally);
                last_publish = Instant::now();
            }
            if stopping {
                return;
            }
            if n == 0 {
                crate::loader::wait_readable(&ring, poll_ms);
            }
        }
    }

    fn publish(&self, t: &Tally) {
        let kernel = self.enforcer.counters().unwrap_or_default();
        if let Ok(mut s) = self.snapshot.lock() {
            s.kernel = kernel;
            s.records_total = t
                .records
                .iter()
                .map(|(k, v)| ((*k).to_string(), *v))
                .collect();
            s.decode_errors_total = t.decode_errors;
            s.events_total = t.events;
            s.alerts_total = t.alerts.iter().map(|(k, v)| (k.clone(), *v)).collect();
            s.actions_total = t.actions.iter().map(|(k, v)| (k.clone(), *v)).collect();
            s.action_errors_total = t.action_errors;
        }
    }

    fn handle(&mut self, ev: &KernelEvent, tally: &mut Tally) {
        let kind = match ev {
            KernelEvent::Exec { .. } => "exec",
            KernelEvent::Fork { .. } => "fork",
            KernelEvent::Exit { .. } => "exit",
            KernelEvent::Syscall { .. } => "syscall",
            KernelEvent::NetDenied { .. } => "net_denied",
        };
        *tally.records.entry(kind).or_default() += 1;
        let cg = ev.header().cgroup_id;
        if !self.scoped.is_empty() && self.seen_cgroups.insert(cg) {
            self.apply_scoped(cg, tally);
        }
        let Some(sev) = self.enricher.process(ev) else {
            return;
        };
        tally.events += 1;
        if let KernelEvent::Exec {
            killed: true,
            deny_rule,
            hdr,
            ..
        } = ev
        {
            let rule = self.rule_name(*deny_rule);
            self.record_action(
                tally,
                "block",
                &target_of(&sev, hdr.pid),
                &rule,
                false,
                "done",
                None,
            );
        }
        if let Some(tap) = &self.tap {
            let _ = tap.send(sev.clone());
        }
        let Some(rules) = self.rules.clone() else {
            return;
        };
        let event = Event::from_syscall(sev);
        for m in rules.evaluate(&event) {
            *tally.alerts.entry(m.rule.name.clone()).or_default() += 1;
            let alert = Alert::from_match(&m, &event, &self.hostname);
            if let Some(out) = self.alerts.as_mut() {
                match serde_json::to_string(&alert) {
                    Ok(line) => {
                        let _ = writeln!(out, "{line}");
                    }
                    Err(e) => {
                        tracing::warn!(rule = %m.rule.name, error = %e, "alert not serializable")
                    }
                }
            }
            if let Err(e) = self.sink.alert(alert) {
                tracing::warn!(error = %e, "sink refused an alert");
            }
            self.enforce_after_match(&m.rule.name, &m.rule.tether.scope, &event, ev, tally);
        }
    }

    fn rule_name(&self, id: u32) -> String {
        self.postures
            .values()
            .find(|p| p.rule_id == id)
            .map(|p| p.rule.clone())
            .unwrap_or_else(|| format!("rule #{id}"))
    }

    fn apply_scoped(&mut self, cg: u64, tally: &mut Tally) {
        let (container, k8s) = self.enricher.container_of(cg);
        if container.id == "host" {
            return;
        }
        for (p, scope) in &self.scoped {
            if !in_scope(scope, &k8s.ns_name, &k8s.pod_labels) {
                continue;
            }
            for name in &p.exec_deny {
                if let Err(e) = self.enforcer.deny_exec(cg, name, p.rule_id) {
                    tally.action_errors += 1;
                    tracing::warn!(rule = %p.rule, cgroup = cg, error = %e, "scoped exec deny not applied");
                }
            }
        }
    }

    fn enforce_after_match(
        &mut self,
        rule: &str,
        scope: &Scope,
        event: &Event,
        ev: &KernelEvent,
        tally: &mut Tally,
    ) {
        let Some(p) = self.postures.get(rule).cloned() else {
            return;
        };
        let Some(sev) = event.syscall() else { return };
        if p.mode != "enforce" {
            return;
        }
        let hdr = ev.header();
        let target = target_of(sev, hdr.pid);
        if !in_scope(scope, &sev.k8s.ns_name, &sev.k8s.pod_labels) {
            self.record_action(
                tally,
                "enforce",
                &target,
                rule,
                true,
                "skipped",
                Some("outside the rule's scope".into()),
            );
            return;
        }
        if p.isolates && sev.container.id != "host" && !self.isolated.contains(&hdr.cgroup_id) {
            let t = format!("cgroup/{}", hdr.cgroup_id);
            match self.enforcer.isolate_cgroup(hdr.cgroup_id, p.rule_id) {
                Ok(()) => {
                    self.isolated.insert(hdr.cgroup_id);
                    tracing::warn!(rule, cgroup = hdr.cgroup_id, pod = %sev.k8s.pod_name, "pod network isolated in kernel");
                    self.record_action(tally, "isolate", &t, rule, false, "done", None);
                }
                Err(e) => self.record_action(
                    tally,
                    "isolate",
                    &t,
                    rule,
                    false,
                    "failed",
                    Some(e.to_string()),
                ),
            }
        }
        let already_killed = matches!(ev, KernelEvent::Exec { killed: true, .. });
        if p.kills_after_match && !already_killed && hdr.pid > 1 {
            let pid = libc::pid_t::try_from(hdr.pid).unwrap_or(0);
            // SAFETY: kill has no memory-safety preconditions.
            let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
            if rc == 0 {
                self.record_action(tally, "kill", &target, rule, false, "done", None);
            } else {
                let err = std::io::Error::last_os_error().to_string();
                self.record_action(tally, "kill", &target, rule, false, "failed", Some(err));
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record_action(
        &self,
        tally: &mut Tally,
        kind: &str,
        target: &str,
        rule: &str,
        dry_run: bool,
        status: &str,
        error: Option<String>,
    ) {
        *tally.actions.entry(kind.to_string()).or_default() += 1;
        if status == "failed" {
            tally.action_errors += 1;
        }
        let rec = ActionRecord {
            time_ns: now_ns(),
            kind: kind.into(),
            target: target.into(),
            rule: rule.into(),
            dry_run,
            status: status.into(),
            error,
        };
        if let Err(e) = self.sink.action(rec) {
            tracing::warn!(error = %e, "sink refused an action record");
        }
    }
}

fn target_of(sev: &SyscallEvent, pid: u32) -> String {
    if sev.k8s.pod_name.is_empty() {
        format!("pid/{pid} container/{}", sev.container.id)
    } else {
        format!("pod/{}/{} pid/{pid}", sev.k8s.ns_name, sev.k8s.pod_name)
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Whether a rule's scope covers a namespace and pod labels.
pub fn in_scope(
    scope: &Scope,
    ns: &str,
    labels: &std::collections::BTreeMap<String, String>,
) -> bool {
    if scope.is_unrestricted() {
        return true;
    }
    if !scope.namespaces.is_empty() && !scope.namespaces.iter().any(|g| glob(g, ns)) {
        return false;
    }
    if scope.exclude_namespaces.iter().any(|g| glob(g, ns)) {
        return false;
    }
    if let Some(sel) = &scope.object_labels {
        if !sel.matches(labels) {
            return false;
        }
    }
    // namespace labels are not known on the node: a namespace_labels selector is not applied
    true
}

/// `*` matches any run of characters; everything else is literal.
pub fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let mut rest = s;
    for (i, part) in parts.iter().enumerate() {
        if i == 0 {
            match rest.strip_prefix(part) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if i == parts.len() - 1 {
            return rest.ends_with(part);
        } else {
            match rest.find(part) {
                Some(at) => rest = rest.get(at + part.len()..).unwrap_or(""),
                None => return false,
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob("prod-*", "prod-eu"));
        assert!(!glob("prod-*", "staging"));
        assert!(glob("*", ""));
        assert!(glob("a*b*c", "axxbyyc"));
        assert!(!glob("a*b*c", "axxbyy"));
        assert!(glob("kube-system", "kube-system"));
    }

    #[test]
    fn scopes() {
        let mut s = Scope::default();
        let labels = std::collections::BTreeMap::new();
        assert!(in_scope(&s, "any", &labels));
        s.namespaces = vec!["prod-*".into()];
        s.exclude_namespaces = vec!["prod-test".into()];
        assert!(in_scope(&s, "prod-eu", &labels));
        assert!(!in_scope(&s, "prod-test", &labels));
        assert!(!in_scope(&s, "dev", &labels));
    }
}
