//! The running node enforcer: reads the ring buffer, keeps the process table, attributes
//! events to containers and pods, evaluates the `syscall` rules, writes Falco JSON alerts,
//! hands alerts and actions to the engine's sink, and enforces what the kernel cannot decide
//! alone (isolation of a matching pod's cgroup, a kill after a match).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use engine::{ActionRecord, Sink};
use policies::decision::{scope_check, NAMESPACE_LABELS_UNKNOWN};
use policies::{Alert, AlertAction, Event, RuleSet, Scope, SyscallEvent};
use tokio_util::sync::CancellationToken;

use crate::cgroups::CgroupResolver;
use crate::events::KernelEvent;
use crate::falco::Enricher;
use crate::loader::{Enforcer, LoadError, LoaderOptions};
use crate::metrics::Snapshot;
use crate::pods::PodCache;
use crate::posture::{self, Handling, RulePosture};
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
            scoped_applied: HashMap::new(),
            scoped_generation: 0,
            isolated: HashSet::new(),
            sink,
            alerts: opts.alerts.take(),
            tap: opts.tap.take(),
            snapshot: snapshot.clone(),
            hostname: opts.hostname.clone(),
            node_name: opts.node_name.clone(),
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
    /// Per container cgroup seen: the scoped exec denies in the kernel for it (binary ->
    /// rule id). Derived from the pod cache; see [`Pipeline::reconcile_scoped`].
    scoped_applied: HashMap<u64, BTreeMap<String, u32>>,
    /// The pod cache generation the scoped denies were last derived from.
    scoped_generation: u64,
    isolated: HashSet<u64>,
    sink: Arc<dyn Sink>,
    alerts: Option<Box<dyn Write + Send>>,
    tap: Option<mpsc::Sender<SyscallEvent>>,
    snapshot: Arc<Mutex<Snapshot>>,
    hostname: String,
    node_name: String,
}

/// How often, at most, the scoped exec denies are reconciled with the pod cache.
const RECONCILE_EVERY: Duration = Duration::from_millis(200);

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
        let mut last_reconcile = Instant::now();
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
            // Changes of the pod cache come in bursts (a watch's relist, status updates):
            // the scoped denies follow them at most every RECONCILE_EVERY.
            if !self.scoped.is_empty() && last_reconcile.elapsed() >= RECONCILE_EVERY {
                let generation = self.enricher.pods.generation();
                if generation != self.scoped_generation {
                    self.scoped_generation = generation;
                    self.reconcile_all_scoped(&mut tally);
                    last_reconcile = Instant::now();
                }
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
        if !self.scoped.is_empty() && !self.scoped_applied.contains_key(&cg) {
            self.reconcile_scoped(cg, tally);
        }
        let Some(sev) = self.enricher.process(ev) else {
            return;
        };
        tally.events += 1;
        // the rule whose kernel exec deny killed this exec
        let killed_by = match ev {
            KernelEvent::Exec {
                killed: true,
                deny_rule,
                ..
            } => Some(*deny_rule),
            _ => None,
        };
        if let Some(tap) = &self.tap {
            let _ = tap.send(sev.clone());
        }
        let kill_target = killed_by.map(|_| target_of(&sev, ev.header().pid));
        let mut kill_reported = false;
        if let Some(rules) = self.rules.clone() {
            let event = Event::from_syscall(sev);
            for m in rules.evaluate(&event) {
                *tally.alerts.entry(m.rule.name.clone()).or_default() += 1;
                let mut alert = Alert::from_match(&m, &event, &self.hostname);
                alert.actions = self.act(&m.rule.name, &m.rule.tether.scope, &event, ev, &alert);
                for a in &alert.actions {
                    self.record_action(tally, a, &m.rule.name);
                }
                if killed_by.is_some_and(|id| self.rule_id(&m.rule.name) == Some(id))
                    && alert
                        .actions
                        .iter()
                        .any(|a| !a.dry_run && a.status == "done")
                {
                    kill_reported = true;
                }
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
            }
        }
        // A kill at exec whose rule raised no alert for it (no rules loaded, or the pins of
        // an earlier run): still an action done, recorded on its own.
        if let (Some(id), Some(target), false) = (killed_by, kill_target, kill_reported) {
            let rule = self.rule_name(id);
            let action = AlertAction {
                kind: "block".into(),
                target,
                dry_run: false,
                status: "done".into(),
                error: None,
                reason: Some(Handling::ExecDeny { lsm: false }.describe()),
            };
            self.record_action(tally, &action, &rule);
        }
    }

    fn rule_id(&self, rule: &str) -> Option<u32> {
        self.postures.get(rule).map(|p| p.rule_id)
    }

    /// Plans the actions of one match, carries out those that are the node's, and returns
    /// them with their outcome, for the alert.
    fn act(
        &mut self,
        rule: &str,
        scope: &Scope,
        event: &Event,
        ev: &KernelEvent,
        alert: &Alert,
    ) -> Vec<AlertAction> {
        let Some(sev) = event.syscall() else {
            return Vec::new();
        };
        if self.postures.get(rule).is_none_or(|p| p.plan.is_empty()) {
            return Vec::new();
        }
        let hdr = ev.header();
        let killed_by = match ev {
            KernelEvent::Exec {
                killed: true,
                deny_rule,
                ..
            } => Some(KilledBy {
                rule_id: *deny_rule,
                rule: self.rule_name(*deny_rule),
            }),
            _ => None,
        };
        let (planned, rule_id) = {
            let Some(p) = self.postures.get(rule) else {
                return Vec::new();
            };
            let facts = MatchFacts {
                sev,
                pid: hdr.pid,
                cgroup_id: hdr.cgroup_id,
                killed_by,
                already_isolated: self.isolated.contains(&hdr.cgroup_id),
                namespace_labels: self.namespace_labels_for(scope, &sev.k8s.ns_name),
                node_name: &self.node_name,
                session_user: event.session().map(|s| s.user.as_str()),
                alert: alert.uuid.to_string(),
            };
            (plan_actions(p, scope, &facts), p.rule_id)
        };
        let mut results: Vec<(Carry, Result<(), String>)> = Vec::new();
        let mut out = Vec::with_capacity(planned.len());
        for Planned { mut action, carry } in planned {
            if let Some(c) = carry {
                let result = match results.iter().find(|(x, _)| *x == c) {
                    Some((_, r)) => r.clone(),
                    None => {
                        let r = self.carry_out(c, rule, rule_id, sev);
                        results.push((c, r.clone()));
                        r
                    }
                };
                if let Err(e) = result {
                    action.status = "failed".into();
                    action.error = Some(e);
                }
            }
            out.push(action);
        }
        out
    }

    fn carry_out(
        &mut self,
        c: Carry,
        rule: &str,
        rule_id: u32,
        sev: &SyscallEvent,
    ) -> Result<(), String> {
        match c {
            Carry::Isolate { cgroup } => {
                self.enforcer
                    .isolate_cgroup(cgroup, rule_id)
                    .map_err(|e| e.to_string())?;
                self.isolated.insert(cgroup);
                tracing::warn!(rule, cgroup, pod = %sev.k8s.pod_name, "pod network isolated in kernel");
                Ok(())
            }
            Carry::Kill { pid } => {
                let pid =
                    libc::pid_t::try_from(pid).map_err(|_| format!("pid {pid} out of range"))?;
                // SAFETY: kill has no memory-safety preconditions.
                let rc = unsafe { libc::kill(pid, libc::SIGKILL) };
                if rc == 0 {
                    Ok(())
                } else {
                    Err(format!(
                        "kill({pid}, SIGKILL): {}",
                        std::io::Error::last_os_error()
                    ))
                }
            }
        }
    }

    fn rule_name(&self, id: u32) -> String {
        self.postures
            .values()
            .find(|p| p.rule_id == id)
            .map(|p| p.rule.clone())
            .unwrap_or_else(|| format!("rule #{id}"))
    }

    /// The labels of `ns` when `scope` selects on them (else not looked up).
    fn namespace_labels_for(
        &self,
        scope: &Scope,
        ns: &str,
    ) -> Result<Arc<BTreeMap<String, String>>, String> {
        if scope.namespace_labels.is_none() || ns.is_empty() {
            return Err(String::new());
        }
        self.enricher.pods.namespace_labels(ns)
    }

    /// Brings the kernel's scoped exec denies of container cgroup `cg` in line with what the
    /// pod cache now says of its pod and namespace: a deny is added when the pod enters a
    /// rule's scope (its labels or its namespace's arrive or change) and removed when it
    /// leaves it. Host cgroups get none.
    fn reconcile_scoped(&mut self, cg: u64, tally: &mut Tally) {
        let (container, k8s) = self.enricher.container_of(cg);
        let mut wanted: BTreeMap<String, u32> = BTreeMap::new();
        if container.id != "host" {
            for (p, scope) in &self.scoped {
                let ns_labels = self.namespace_labels_for(scope, &k8s.ns_name);
                if !in_scope(
                    scope,
                    &k8s.ns_name,
                    &k8s.pod_labels,
                    ns_labels.as_deref().map_err(String::as_str),
                ) {
                    continue;
                }
                for name in &p.exec_deny {
                    wanted.entry(name.clone()).or_insert(p.rule_id);
                }
            }
        }
        self.apply_scoped(cg, wanted, &k8s.pod_name, tally);
    }

    /// Makes `wanted` (binary -> rule id) the scoped exec denies of cgroup `cg` in the kernel
    /// and records what is there. Entries that fail to apply are not recorded, so the next
    /// reconciliation tries them again.
    fn apply_scoped(
        &mut self,
        cg: u64,
        wanted: BTreeMap<String, u32>,
        pod: &str,
        tally: &mut Tally,
    ) {
        let had = self.scoped_applied.remove(&cg).unwrap_or_default();
        let mut applied = BTreeMap::new();
        for (name, rule_id) in &had {
            if wanted.contains_key(name) {
                continue;
            }
            match self.enforcer.allow_exec(cg, name) {
                Ok(()) => {
                    tracing::info!(rule = %self.rule_name(*rule_id), cgroup = cg, binary = %name, pod, "scoped exec deny removed (the pod left the rule's scope, or its cgroup is gone)");
                }
                Err(e) => {
                    tally.action_errors += 1;
                    tracing::warn!(cgroup = cg, binary = %name, error = %e, "scoped exec deny not removed");
                    applied.insert(name.clone(), *rule_id);
                }
            }
        }
        for (name, rule_id) in wanted {
            if had.get(&name) == Some(&rule_id) {
                applied.insert(name, rule_id);
                continue;
            }
            match self.enforcer.deny_exec(cg, &name, rule_id) {
                Ok(()) => {
                    tracing::info!(rule = %self.rule_name(rule_id), cgroup = cg, binary = %name, pod, "scoped exec deny applied");
                    applied.insert(name, rule_id);
                }
                Err(e) => {
                    tally.action_errors += 1;
                    tracing::warn!(rule = %self.rule_name(rule_id), cgroup = cg, error = %e, "scoped exec deny not applied");
                }
            }
        }
        self.scoped_applied.insert(cg, applied);
    }

    /// After a change of the pod cache: every container cgroup seen is reconciled again, and
    /// the cgroups removed since are forgotten along with their denies.
    fn reconcile_all_scoped(&mut self, tally: &mut Tally) {
        let cgroups: Vec<u64> = self.scoped_applied.keys().copied().collect();
        for cg in cgroups {
            if self.enricher.cgroups.forget_if_gone(cg) {
                self.apply_scoped(cg, BTreeMap::new(), "", tally);
                self.scoped_applied.remove(&cg);
                self.isolated.remove(&cg);
            } else {
                self.reconcile_scoped(cg, tally);
            }
        }
    }

    /// Hands one action to the sink as an `ActionRecord` (dry-run ones too) and counts it;
    /// `tether_node_actions_total` counts the actions that were not dry-run.
    fn record_action(&self, tally: &mut Tally, a: &AlertAction, rule: &str) {
        if !a.dry_run {
            *tally.actions.entry(a.kind.clone()).or_default() += 1;
        }
        if a.status == "failed" {
            tally.action_errors += 1;
        }
        let rec = ActionRecord {
            time_ns: now_ns(),
            kind: a.kind.clone(),
            target: a.target.clone(),
            rule: rule.into(),
            dry_run: a.dry_run,
            status: a.status.clone(),
            error: a.error.clone(),
            reason: a.reason.clone(),
        };
        if let Err(e) = self.sink.action(rec) {
            tracing::warn!(error = %e, "sink refused an action record");
        }
    }
}

/// Something the node does for an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Carry {
    Kill { pid: u32 },
    Isolate { cgroup: u64 },
}

/// One action of a match, as it will appear on the alert; `carry`, when set, is carried out
/// and turns a `done` into `failed` (with the error) when it fails.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Planned {
    action: AlertAction,
    carry: Option<Carry>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct KilledBy {
    rule_id: u32,
    rule: String,
}

/// What the planning of a match's actions needs to know about it.
struct MatchFacts<'a> {
    sev: &'a SyscallEvent,
    pid: u32,
    cgroup_id: u64,
    /// The exec was killed in the kernel by this rule's exec deny.
    killed_by: Option<KilledBy>,
    /// The cgroup was isolated at an earlier match.
    already_isolated: bool,
    /// The labels of the event's namespace, or why they are not known (read only when the
    /// rule's scope selects on them).
    namespace_labels: Result<Arc<BTreeMap<String, String>>, String>,
    node_name: &'a str,
    /// The user behind the exec session the process belongs to, when joined.
    session_user: Option<&'a str>,
    /// The alert's uuid.
    alert: String,
}

/// Every action the rule asks for, for one match: what the node does (enforce, in scope),
/// what it would have done (detect mode, outside the scope: dry-run, `skipped`), and what is
/// left to the engine (dry-run, `skipped`). Nothing the rule asks for is left out.
fn plan_actions(p: &RulePosture, scope: &Scope, f: &MatchFacts<'_>) -> Vec<Planned> {
    let enforce = p.mode == "enforce";
    let outside = if enforce {
        scope_miss(
            scope,
            &f.sev.k8s.ns_name,
            &f.sev.k8s.pod_labels,
            f.namespace_labels.as_deref().map_err(String::as_str),
        )
    } else {
        None
    };
    p.plan
        .iter()
        .map(|a| {
            let target = target_for(&a.action, &a.handling, f);
            if !enforce {
                let reason = match &a.handling {
                    Handling::Engine => format!("detect mode; {}", a.handling.describe()),
                    h => format!("detect mode; in enforce mode: {}", h.describe()),
                };
                return dry(&a.action, target, reason);
            }
            if let Some(why) = &outside {
                return dry(
                    &a.action,
                    target,
                    format!("outside the rule's scope: {why}"),
                );
            }
            enforce_one(p, &a.action, &a.handling, target, f)
        })
        .collect()
}

fn enforce_one(
    p: &RulePosture,
    action: &str,
    handling: &Handling,
    target: String,
    f: &MatchFacts<'_>,
) -> Planned {
    // A failure's text is its error; any other note is its reason.
    let action_of = |kind: &str, status: &str, note: Option<String>| {
        let failed = status == "failed";
        AlertAction {
            kind: kind.into(),
            target: target.clone(),
            dry_run: false,
            status: status.into(),
            error: if failed { note.clone() } else { None },
            reason: if failed { None } else { note },
        }
    };
    let skipped = |why: String| Planned {
        action: action_of(action, "skipped", Some(why)),
        carry: None,
    };
    let instead = |kind: &str| (action != kind).then(|| format!("in place of {action}"));
    match handling {
        Handling::Engine => dry(action, target.clone(), handling.describe()),
        Handling::Unavailable { why } => Planned {
            action: action_of(action, "failed", Some(format!("not possible on this node: {why}"))),
            carry: None,
        },
        Handling::ExecDeny { .. } => match &f.killed_by {
            Some(k) if k.rule_id == p.rule_id => Planned {
                action: action_of(action, "done", Some(handling.describe())),
                carry: None,
            },
            Some(k) => skipped(format!(
                "the process was already killed in the kernel at exec by rule \"{}\"",
                k.rule
            )),
            None => Planned {
                action: action_of(
                    action,
                    "failed",
                    Some(format!(
                        "not stopped: the kernel's exec deny of {} did not apply to this event ({} by {})",
                        p.exec_deny.join(", "),
                        f.sev.evt_type,
                        f.sev.proc.name
                    )),
                ),
                carry: None,
            },
        },
        Handling::KillAfterMatch => match &f.killed_by {
            Some(k) => skipped(format!(
                "the process was already killed in the kernel at exec by rule \"{}\"",
                k.rule
            )),
            None if f.pid <= 1 => skipped(format!("no process to kill (pid {})", f.pid)),
            None => Planned {
                action: action_of("kill", "done", instead("kill")),
                carry: Some(Carry::Kill { pid: f.pid }),
            },
        },
        Handling::Isolate => {
            if f.sev.container.id == "host" {
                skipped("a host process: there is no pod network to isolate".into())
            } else if f.already_isolated {
                skipped(format!(
                    "already isolated: cgroup {} was cut at an earlier match",
                    f.cgroup_id
                ))
            } else {
                Planned {
                    action: action_of("isolate", "done", instead("isolate")),
                    carry: Some(Carry::Isolate {
                        cgroup: f.cgroup_id,
                    }),
                }
            }
        }
    }
}

fn dry(kind: &str, target: String, reason: String) -> Planned {
    Planned {
        action: AlertAction {
            kind: kind.into(),
            target,
            dry_run: true,
            status: "skipped".into(),
            error: None,
            reason: Some(reason),
        },
        carry: None,
    }
}

/// The object an action acts (or would act) on.
fn target_for(action: &str, handling: &Handling, f: &MatchFacts<'_>) -> String {
    let k8s = &f.sev.k8s;
    let pod = if k8s.pod_name.is_empty() {
        format!("container/{}", f.sev.container.id)
    } else {
        format!("pod/{}/{}", k8s.ns_name, k8s.pod_name)
    };
    let isolates = matches!(handling, Handling::Isolate) || action == "isolate";
    match action {
        _ if isolates => format!("{pod} cgroup/{}", f.cgroup_id),
        "block" | "kill" => target_of(f.sev, f.pid),
        "taint" | "cordon" => {
            let node = if k8s.node_name.is_empty() {
                f.node_name
            } else {
                k8s.node_name.as_str()
            };
            format!("node/{node}")
        }
        "deny-identity" => match f.session_user {
            Some(u) if !u.is_empty() => format!("user/{u}"),
            _ => "user/(unknown: no exec session joined to this process)".into(),
        },
        "notify" => format!("alert/{}", f.alert),
        _ => pod,
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

/// Whether a rule's scope covers a namespace, its labels and the pod's labels.
pub fn in_scope(
    scope: &Scope,
    ns: &str,
    labels: &BTreeMap<String, String>,
    namespace_labels: Result<&BTreeMap<String, String>, &str>,
) -> bool {
    scope_miss(scope, ns, labels, namespace_labels).is_none()
}

/// Why a namespace (empty for a host process), its labels and pod labels are outside a
/// rule's scope, or `None` when they are inside. Namespace labels that are not known (`Err`
/// with why, from the namespace watch) leave a `namespace_labels` selector unmatched: the
/// rule then only detects, as in the webhook.
pub fn scope_miss(
    scope: &Scope,
    ns: &str,
    labels: &BTreeMap<String, String>,
    namespace_labels: Result<&BTreeMap<String, String>, &str>,
) -> Option<String> {
    if scope.is_unrestricted() {
        return None;
    }
    let ns = (!ns.is_empty()).then_some(ns);
    scope_check(scope, ns, labels, namespace_labels.ok())
        .err()
        .map(|why| match namespace_labels {
            Err(unknown) if why == NAMESPACE_LABELS_UNKNOWN && !unknown.is_empty() => {
                unknown.to_string()
            }
            _ => why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::posture::ActionPlan;
    use policies::{ContainerInfo, K8sInfo, ProcInfo};

    fn posture(mode: &str, plan: &[(&str, Handling)]) -> RulePosture {
        RulePosture {
            rule: "R".into(),
            rule_id: 3,
            mode: mode.into(),
            actions: plan.iter().map(|(a, _)| (*a).to_string()).collect(),
            mechanisms: Vec::new(),
            degraded: false,
            warnings: Vec::new(),
            exec_deny: vec!["nc".into()],
            isolates: false,
            kills_after_match: false,
            plan: plan
                .iter()
                .map(|(a, h)| ActionPlan {
                    action: (*a).to_string(),
                    handling: h.clone(),
                })
                .collect(),
        }
    }

    fn event(ns: &str, pod: &str) -> SyscallEvent {
        SyscallEvent {
            evt_type: "execve".into(),
            proc: ProcInfo {
                pid: 42,
                name: "nc".into(),
                ..ProcInfo::default()
            },
            container: ContainerInfo {
                id: if pod.is_empty() {
                    "host".into()
                } else {
                    "0123456789ab".into()
                },
                ..ContainerInfo::default()
            },
            k8s: K8sInfo {
                ns_name: ns.into(),
                pod_name: pod.into(),
                ..K8sInfo::default()
            },
            ..SyscallEvent::default()
        }
    }

    fn facts(sev: &SyscallEvent) -> MatchFacts<'_> {
        MatchFacts {
            sev,
            pid: 42,
            cgroup_id: 77,
            killed_by: None,
            already_isolated: false,
            namespace_labels: Err(String::new()),
            node_name: "node-a",
            session_user: None,
            alert: "a-1".into(),
        }
    }

    fn killed(rule_id: u32, rule: &str) -> Option<KilledBy> {
        Some(KilledBy {
            rule_id,
            rule: rule.into(),
        })
    }

    #[test]
    fn enforce_kill_at_exec_is_done_on_the_pod() {
        let p = posture("enforce", &[("block", Handling::ExecDeny { lsm: false })]);
        let sev = event("enf", "api-0");
        let f = MatchFacts {
            killed_by: killed(3, "R"),
            ..facts(&sev)
        };
        let got = plan_actions(&p, &Scope::default(), &f);
        assert_eq!(got.len(), 1);
        let a = &got[0].action;
        assert_eq!(
            (
                a.kind.as_str(),
                a.target.as_str(),
                a.dry_run,
                a.status.as_str()
            ),
            ("block", "pod/enf/api-0 pid/42", false, "done")
        );
        assert!(
            a.reason
                .as_deref()
                .is_some_and(|e| e.contains("SIGKILL in the kernel at exec")),
            "{a:?}"
        );
        assert_eq!(got[0].carry, None, "the kernel already did it");
    }

    #[test]
    fn exec_deny_of_another_rule_or_none_is_said() {
        let p = posture("enforce", &[("kill", Handling::ExecDeny { lsm: false })]);
        let sev = event("enf", "api-0");
        let f = MatchFacts {
            killed_by: killed(9, "Other"),
            ..facts(&sev)
        };
        let a = &plan_actions(&p, &Scope::default(), &f)[0].action;
        assert_eq!((a.status.as_str(), a.dry_run), ("skipped", false));
        assert!(
            a.reason.as_deref().unwrap().contains("rule \"Other\""),
            "{a:?}"
        );
        let a = &plan_actions(&p, &Scope::default(), &facts(&sev))[0].action;
        assert_eq!(a.status, "failed");
        assert!(
            a.error
                .as_deref()
                .unwrap()
                .contains("exec deny of nc did not apply"),
            "{a:?}"
        );
    }

    #[test]
    fn enforce_in_scope_carries_out_isolate_and_kill() {
        let p = posture(
            "enforce",
            &[
                ("isolate", Handling::Isolate),
                ("block", Handling::KillAfterMatch),
            ],
        );
        let sev = event("iso", "victim-0");
        let got = plan_actions(&p, &Scope::default(), &facts(&sev));
        assert_eq!(got[0].carry, Some(Carry::Isolate { cgroup: 77 }));
        assert_eq!(got[0].action.kind, "isolate");
        assert_eq!(got[0].action.target, "pod/iso/victim-0 cgroup/77");
        assert_eq!(got[0].action.status, "done");
        assert_eq!(got[1].carry, Some(Carry::Kill { pid: 42 }));
        assert_eq!(got[1].action.kind, "kill", "the kill is what is done");
        assert_eq!(got[1].action.reason.as_deref(), Some("in place of block"));
        // the same pod again: isolated already; a host process has no pod network
        let f = MatchFacts {
            already_isolated: true,
            ..facts(&sev)
        };
        let a = &plan_actions(&p, &Scope::default(), &f)[0];
        assert_eq!((a.action.status.as_str(), a.carry), ("skipped", None));
        assert!(a
            .action
            .reason
            .as_deref()
            .unwrap()
            .contains("already isolated"));
        let host = event("", "");
        let a = &plan_actions(&p, &Scope::default(), &facts(&host))[0];
        assert_eq!((a.action.status.as_str(), a.carry), ("skipped", None));
        assert!(a.action.reason.as_deref().unwrap().contains("host process"));
        // a process killed at exec is not killed again
        let f = MatchFacts {
            killed_by: killed(9, "Other"),
            ..facts(&sev)
        };
        let a = &plan_actions(&p, &Scope::default(), &f)[1];
        assert_eq!((a.action.status.as_str(), a.carry), ("skipped", None));
    }

    #[test]
    fn detect_mode_lists_every_action_as_dry_run() {
        let p = posture(
            "detect",
            &[
                ("isolate", Handling::Isolate),
                ("kill", Handling::KillAfterMatch),
                ("block", Handling::ExecDeny { lsm: false }),
                ("taint", Handling::Engine),
                ("notify", Handling::Engine),
            ],
        );
        let sev = event("det", "watched-0");
        let f = MatchFacts {
            killed_by: killed(3, "R"),
            ..facts(&sev)
        };
        let got = plan_actions(&p, &Scope::default(), &f);
        let kinds: Vec<&str> = got.iter().map(|x| x.action.kind.as_str()).collect();
        assert_eq!(kinds, ["isolate", "kill", "block", "taint", "notify"]);
        for x in &got {
            assert_eq!(x.carry, None, "{x:?}");
            assert!(x.action.dry_run, "{x:?}");
            assert_eq!(x.action.status, "skipped");
            assert!(
                x.action
                    .reason
                    .as_deref()
                    .unwrap()
                    .starts_with("detect mode"),
                "{x:?}"
            );
        }
        let targets: Vec<&str> = got.iter().map(|x| x.action.target.as_str()).collect();
        assert_eq!(
            targets,
            [
                "pod/det/watched-0 cgroup/77",
                "pod/det/watched-0 pid/42",
                "pod/det/watched-0 pid/42",
                "node/node-a",
                "alert/a-1"
            ]
        );
        assert!(got[1]
            .action
            .reason
            .as_deref()
            .unwrap()
            .contains("SIGKILL from user space"));
        assert!(got[3]
            .action
            .reason
            .as_deref()
            .unwrap()
            .contains("engine's responders"));
    }

    #[test]
    fn enforce_outside_scope_is_skipped_with_the_reason() {
        let p = posture(
            "enforce",
            &[
                ("isolate", Handling::Isolate),
                ("kill", Handling::KillAfterMatch),
                ("deny-identity", Handling::Engine),
            ],
        );
        let scope = Scope {
            namespaces: vec!["prod-*".into()],
            ..Scope::default()
        };
        let sev = event("dev", "web-0");
        let f = MatchFacts {
            session_user: Some("alice"),
            ..facts(&sev)
        };
        let got = plan_actions(&p, &scope, &f);
        assert_eq!(got.len(), 3);
        for x in &got {
            assert_eq!(x.carry, None, "{x:?}");
            assert!(x.action.dry_run);
            assert_eq!(x.action.status, "skipped");
            let why = x.action.reason.as_deref().unwrap();
            assert!(
                why.starts_with("outside the rule's scope: namespace \"dev\""),
                "{why}"
            );
        }
        assert_eq!(got[2].action.target, "user/alice");
        // in scope: the engine's actions are still listed, dry-run
        let sev = event("prod-eu", "web-0");
        let got = plan_actions(&p, &scope, &facts(&sev));
        assert!(got[0].carry.is_some() && got[1].carry.is_some());
        let e = &got[2].action;
        assert!(e.dry_run && e.status == "skipped", "{e:?}");
        assert!(e.reason.as_deref().unwrap().contains("not by the node"));
        assert!(e.target.starts_with("user/(unknown"), "{e:?}");
    }

    #[test]
    fn unavailable_action_fails_with_why_and_no_actions_give_none() {
        let why = "isolate needs cgroup sock_addr programs, unavailable here: EPERM";
        let p = posture(
            "enforce",
            &[(
                "isolate",
                Handling::Unavailable {
                    why: why.to_string(),
                },
            )],
        );
        let sev = event("iso", "victim-0");
        let got = plan_actions(&p, &Scope::default(), &facts(&sev));
        assert_eq!(got[0].carry, None);
        assert_eq!(got[0].action.status, "failed");
        assert!(got[0].action.error.as_deref().unwrap().ends_with(why));
        let p = posture("enforce", &[]);
        assert!(plan_actions(&p, &Scope::default(), &facts(&sev)).is_empty());
        let p = posture("detect", &[]);
        assert!(plan_actions(&p, &Scope::default(), &facts(&sev)).is_empty());
    }

    #[test]
    fn scopes() {
        let mut s = Scope::default();
        let labels = BTreeMap::new();
        let no_ns = Err("");
        assert!(in_scope(&s, "any", &labels, no_ns));
        s.namespaces = vec!["prod-*".into()];
        s.exclude_namespaces = vec!["prod-test".into()];
        assert!(in_scope(&s, "prod-eu", &labels, no_ns));
        assert!(!in_scope(&s, "prod-test", &labels, no_ns));
        assert!(!in_scope(&s, "dev", &labels, no_ns));
        assert!(scope_miss(&s, "prod-test", &labels, no_ns)
            .unwrap()
            .contains("excluded"));
        // a host process has no namespace
        assert!(scope_miss(&s, "", &labels, no_ns)
            .unwrap()
            .contains("no namespace"));
        // globs as the rule loader accepts them
        s.namespaces = vec!["prod-[ab]".into()];
        assert!(in_scope(&s, "prod-a", &labels, no_ns));
        assert!(!in_scope(&s, "prod-c", &labels, no_ns));
    }

    #[test]
    fn namespace_label_scopes_need_the_labels() {
        let s = Scope {
            namespace_labels: Some(policies::LabelSelector {
                match_labels: BTreeMap::from([("tether.io/enforce".into(), "true".into())]),
                match_expressions: Vec::new(),
            }),
            ..Scope::default()
        };
        let pod = BTreeMap::new();
        let enforced = BTreeMap::from([("tether.io/enforce".to_string(), "true".to_string())]);
        let open = BTreeMap::new();
        assert!(in_scope(&s, "team-a", &pod, Ok(&enforced)));
        assert!(scope_miss(&s, "team-b", &pod, Ok(&open))
            .unwrap()
            .contains("do not match"));
        // unknown labels: out of scope (the rule only detects), saying why
        let why = "the labels of namespace \"team-c\" are not known: the namespace watch has not synced yet";
        assert_eq!(
            scope_miss(&s, "team-c", &pod, Err(why)).as_deref(),
            Some(why)
        );
        assert!(!in_scope(&s, "", &pod, Err("")));
    }
}
