//! Kernel tests, run for real as root on this machine: real `runc` containers (Debian
//! `runc`, a `busybox-static` rootfs) with kubepods-style cgroup paths, pods registered in
//! the Kubernetes API server double, the real eBPF programs pinned under
//! `/sys/fs/bpf/tether-test-PID` (one directory per run, removed at the end: two runs at once
//! do not share pins).
//!
//! One binary with its own `main` (no libtest harness): the cases share the run's pin
//! directory and run one after another; a failed case is reported and the others still run. When not root, or
//! when `runc` or `busybox` are missing, it fails with what to install — it never skips.
//! The BPF LSM case is the one exception: where the kernel refuses LSM programs it prints the
//! probe's reason and passes, as the fallback path is what runs here.
//!
//! Run: `cargo test -p node-enforcer --test kernel` (as root).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use engine::{ChannelSink, Found, SinkReceiver};
use node_enforcer::loader::{self, LoaderOptions, SyscallHook};
use node_enforcer::node::{Node, NodeOptions};
use node_enforcer::pods::{self, PodCache};
use node_enforcer::prefilter::Definitions;
use node_enforcer::probe::SyscallTracepoints;
use policies::{RuleSet, SyscallEvent};

const NODE: &str = "node-a";

/// This run's pin directory: `/sys/fs/bpf/tether-test-PID`, or the parent run's (passed in
/// `TETHER_TEST_PIN_DIR`) in the loader child of `restart_readopt_unload`.
fn pin_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| match std::env::var_os("TETHER_TEST_PIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => PathBuf::from(format!("/sys/fs/bpf/tether-test-{}", std::process::id())),
    })
}

fn main() -> ExitCode {
    if std::env::var("TETHER_TEST_ROLE").as_deref() == Ok("loader") {
        return child_loader();
    }
    if let Err(e) = preflight() {
        eprintln!("kernel tests cannot run: {e}");
        return ExitCode::FAILURE;
    }
    let filter: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    type Case = (&'static str, fn(&mut World));
    let cases: Vec<Case> = vec![
        ("visibility", visibility),
        ("write_prefilter", write_prefilter),
        ("enforce_exec_fallback", enforce_exec_fallback),
        ("isolate_and_detect", isolate_and_detect),
        ("scoped_exec_deny", scoped_exec_deny),
        ("lsm_path", lsm_path),
        ("restart_readopt_unload", restart_readopt_unload),
        ("raw_tp_fallback", raw_tp_fallback),
        ("incompatible_pins", incompatible_pins),
        ("bad_input", bad_input),
    ];
    let mut world = World::new();
    let mut failed = Vec::new();
    for (name, case) in cases {
        if !filter.is_empty() && !filter.iter().any(|f| name.contains(f.as_str())) {
            continue;
        }
        println!("case {name} ...");
        let _ = loader::unload(pin_dir());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(&mut world)));
        world.stop_containers();
        let _ = loader::unload(pin_dir());
        match r {
            Ok(()) => println!("case {name} ... ok"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_string()))
                    .unwrap_or_default();
                println!("case {name} ... FAILED: {msg}");
                failed.push(name);
            }
        }
    }
    world.cleanup();
    let _ = loader::unload(pin_dir());
    if pin_dir().exists() {
        println!("pin directory {} left behind", pin_dir().display());
        failed.push("cleanup");
    }
    if failed.is_empty() {
        println!("kernel tests: all passed");
        ExitCode::SUCCESS
    } else {
        println!("kernel tests: FAILED: {}", failed.join(", "));
        ExitCode::FAILURE
    }
}

fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("they load eBPF programs and start runc containers: run them as root".into());
    }
    for (bin, pkg) in [("runc", "runc"), ("busybox", "busybox-static")] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {bin}")])
            .output()
            .map(|o| !o.status.success())
            .unwrap_or(true)
        {
            return Err(format!(
                "`{bin}` not found: install the Debian package `{pkg}`"
            ));
        }
    }
    let bb = which("busybox");
    let out = Command::new("file")
        .arg(&bb)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if !out.is_empty() && !out.contains("statically linked") {
        return Err(format!(
            "{} is not statically linked: install the Debian package `busybox-static`",
            bb.display()
        ));
    }
    Ok(())
}

fn which(bin: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {bin}")])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

// ---- the world: API server double, rootfs, containers ------------------------------------

static SEQ: AtomicUsize = AtomicUsize::new(0);

struct World {
    rt: tokio::runtime::Runtime,
    api: Option<apiserver_double::Running>,
    dir: PathBuf,
    rootfs: PathBuf,
    containers: Vec<Container>,
    slices: Vec<String>,
}

struct Container {
    name: String,
    state: PathBuf,
    cgroup_rel: String,
}

#[derive(Clone)]
struct PodRef {
    uid: String,
}

impl World {
    fn new() -> World {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let api = rt
            .block_on(apiserver_double::ApiServerDouble::start())
            .unwrap();
        let dir = std::env::temp_dir().join(format!("tether-kernel-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rootfs = dir.join("rootfs");
        for d in ["bin", "proc", "sys", "dev", "tmp", "etc", "root"] {
            std::fs::create_dir_all(rootfs.join(d)).unwrap();
        }
        std::fs::copy(which("busybox"), rootfs.join("bin/busybox")).unwrap();
        for applet in [
            "sh", "cat", "echo", "nc", "wget", "sleep", "touch", "true", "id", "ls", "chmod",
        ] {
            std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(applet)).unwrap();
        }
        std::fs::write(rootfs.join("etc/shadow"), "root:*:1:0:99999:7:::\n").unwrap();
        std::fs::write(rootfs.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n").unwrap();
        World {
            rt,
            api: Some(api),
            dir,
            rootfs,
            containers: Vec::new(),
            slices: Vec::new(),
        }
    }

    fn api(&self) -> &apiserver_double::Running {
        self.api.as_ref().unwrap()
    }

    /// A pod in the double with one container whose id is `cid`.
    fn pod(&mut self, ns: &str, name: &str) -> (PodRef, String) {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let uid = format!(
            "7e57{:04x}-{:04x}-4000-8000-{:012x}",
            std::process::id() & 0xffff,
            n,
            n
        );
        // the short id (first 12 characters) holds the pid and the sequence number: the
        // containers of two runs at once never share one (both watch every cgroup)
        let cid = format!(
            "{:06x}{:06x}{:052x}",
            std::process::id() & 0xff_ffff,
            n,
            0x00c0_ffee_u64
        );
        let _ = self.api().insert(serde_json::json!({
            "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}
        }));
        self.api()
            .insert(serde_json::json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "namespace": ns, "uid": uid, "labels": {"app": name}},
                "spec": {"nodeName": NODE, "containers": [{"name": "main", "image": "docker.io/library/busybox:1.36"}]},
                "status": {"phase": "Running", "containerStatuses": [{"name": "main", "image": "docker.io/library/busybox:1.36",
                    "imageID": "", "ready": true, "restartCount": 0, "containerID": format!("containerd://{cid}")}]}
            }))
            .unwrap();
        (PodRef { uid }, cid)
    }

    /// Starts a container of the pod running `sleep 600`, detached.
    fn start(&mut self, pod: &PodRef, cid: &str) -> usize {
        let n = SEQ.fetch_add(1, Ordering::SeqCst);
        let name = format!("tether-test-{}-{n}", std::process::id());
        let bundle = self.dir.join(&name);
        std::fs::create_dir_all(&bundle).unwrap();
        let out = Command::new("runc")
            .arg("spec")
            .current_dir(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc spec: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut cfg: serde_json::Value =
            serde_json::from_slice(&std::fs::read(bundle.join("config.json")).unwrap()).unwrap();
        let slice = format!("kubepods-besteffort-pod{}.slice", pod.uid.replace('-', "_"));
        let cgroup_rel =
            format!("/kubepods.slice/kubepods-besteffort.slice/{slice}/cri-containerd-{cid}.scope");
        cfg["process"]["terminal"] = false.into();
        cfg["process"]["args"] = serde_json::json!(["/bin/sleep", "600"]);
        cfg["root"]["path"] = self.rootfs.to_string_lossy().into_owned().into();
        cfg["root"]["readonly"] = false.into();
        cfg["linux"]["cgroupsPath"] = cgroup_rel.clone().into();
        // the host network: containers reach a listener on the test's loopback
        let ns: Vec<serde_json::Value> = cfg["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| n["type"] != "network")
            .cloned()
            .collect();
        cfg["linux"]["namespaces"] = ns.into();
        std::fs::write(
            bundle.join("config.json"),
            serde_json::to_vec_pretty(&cfg).unwrap(),
        )
        .unwrap();
        let state = self.dir.join("runc-state");
        let log = bundle.join("runc.log");
        let out = Command::new("runc")
            .arg("--root")
            .arg(&state)
            .args(["run", "-d", "--bundle"])
            .arg(&bundle)
            .arg(&name)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .status()
            .unwrap();
        assert!(
            out.success(),
            "runc run: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        self.slices
            .push(format!("/kubepods.slice/kubepods-besteffort.slice/{slice}"));
        self.containers.push(Container {
            name,
            state,
            cgroup_rel,
        });
        self.containers.len() - 1
    }

    /// Runs `sh -c script` inside container `i` (busybox's shell runs applets named without a
    /// path in-process, without an exec: scripts name binaries by path to exec them); returns (exit code, stdout+stderr).
    fn exec(&self, i: usize, script: &str) -> (i32, String) {
        let c = &self.containers[i];
        let out = Command::new("runc")
            .arg("--root")
            .arg(&c.state)
            .args(["exec", &c.name, "/bin/sh", "-c", script])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code().unwrap_or(-1), text)
    }

    /// Replaces the labels of pod `ns/name` in the double (watchers see it MODIFIED).
    fn set_labels(&self, ns: &str, name: &str, labels: serde_json::Value) {
        let mut pod = self
            .api()
            .get("pods", Some(ns), name)
            .unwrap()
            .unwrap_or_else(|| panic!("pod {ns}/{name} not in the double"));
        pod["metadata"]["labels"] = labels;
        self.api().insert(pod).unwrap();
    }

    /// Stops container `i` and removes its cgroup directory (its index stays taken).
    fn stop_one(&self, i: usize) {
        let c = &self.containers[i];
        let out = Command::new("runc")
            .arg("--root")
            .arg(&c.state)
            .args(["delete", "-f", &c.name])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "runc delete: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dir = loader::cgroup2_root()
            .unwrap()
            .join(c.cgroup_rel.trim_start_matches('/'));
        if dir.exists() {
            std::fs::remove_dir(&dir).unwrap_or_else(|e| panic!("rmdir {}: {e}", dir.display()));
        }
    }

    fn cgroup_id(&self, i: usize) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let root = loader::cgroup2_root().unwrap();
        let rel = self.containers[i].cgroup_rel.trim_start_matches('/');
        std::fs::metadata(root.join(rel)).unwrap().ino()
    }

    fn stop_containers(&mut self) {
        for c in self.containers.drain(..) {
            let _ = Command::new("runc")
                .arg("--root")
                .arg(&c.state)
                .args(["delete", "-f", &c.name])
                .output();
        }
        // remove the test pods' cgroup directories in every hierarchy, leaves first
        for slice in self.slices.drain(..) {
            for h in std::fs::read_dir("/sys/fs/cgroup")
                .into_iter()
                .flatten()
                .filter_map(Result::ok)
            {
                let p = h.path().join(slice.trim_start_matches('/'));
                let mut dirs: Vec<PathBuf> = Vec::new();
                collect_dirs(&p, &mut dirs);
                dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
                for d in dirs {
                    let _ = std::fs::remove_dir(&d);
                }
            }
        }
    }

    fn cleanup(&mut self) {
        self.stop_containers();
        if let Some(api) = self.api.take() {
            self.rt.block_on(api.shutdown());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Starts a watch of this node's pods against the double.
    fn pod_cache(&self) -> (PodCache, tokio_util::sync::CancellationToken) {
        let cache = PodCache::new();
        let token = tokio_util::sync::CancellationToken::new();
        let client = {
            let _g = self.rt.enter();
            self.api().client().unwrap()
        };
        self.rt.spawn(pods::watch_pods(
            client,
            NODE.into(),
            cache.clone(),
            token.clone(),
        ));
        (cache, token)
    }

    fn wait_pods(&self, cache: &PodCache, n: usize) {
        let end = Instant::now() + Duration::from_secs(10);
        while cache.len() < n {
            assert!(
                Instant::now() < end,
                "pod watch saw {} pods, expected {n}",
                cache.len()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn collect_dirs(p: &Path, out: &mut Vec<PathBuf>) {
    if !p.is_dir() {
        return;
    }
    out.push(p.to_path_buf());
    for e in std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .filter_map(Result::ok)
    {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            collect_dirs(&e.path(), out);
        }
    }
}

// ---- running the enforcer -------------------------------------------------------------------

struct Running {
    node: Option<Node>,
    rx: SinkReceiver,
    tap: mpsc::Receiver<SyscallEvent>,
    /// What the enforcer wrote as alert JSON lines.
    alerts: SharedBuf,
    _watch: tokio_util::sync::CancellationToken,
}

/// An alert writer the test reads back.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn rules(text: &str) -> Arc<RuleSet> {
    Arc::new(
        RuleSet::from_texts(&[("test_rules.yaml".to_string(), text.to_string())])
            .unwrap_or_else(|e| panic!("rules: {e}")),
    )
}

fn start_node(world: &World, rules_text: Option<&str>, all_cgroups: bool, pods: usize) -> Running {
    start_node_hook(
        world,
        rules_text,
        all_cgroups,
        pods,
        SyscallHook::Auto,
        None,
    )
}

fn start_node_hook(
    world: &World,
    rules_text: Option<&str>,
    all_cgroups: bool,
    pods: usize,
    syscall_hook: SyscallHook,
    refuse_attach: Option<&str>,
) -> Running {
    let (cache, watch) = world.pod_cache();
    world.wait_pods(&cache, pods);
    let (sink, rx) = ChannelSink::new();
    let (tx, tap) = mpsc::channel();
    let mut opts = NodeOptions::new(NODE);
    opts.loader = LoaderOptions {
        pin_dir: pin_dir().into(),
        all_cgroups,
        syscall_hook,
        refuse_attach: refuse_attach.map(str::to_string),
        ..LoaderOptions::default()
    };
    opts.rules = rules_text.map(rules);
    opts.pods = cache;
    opts.tap = Some(tx);
    let alerts = SharedBuf::default();
    opts.alerts = Some(Box::new(alerts.clone()));
    let node = Node::start(opts, Arc::new(sink)).unwrap_or_else(|e| panic!("node start: {e}"));
    Running {
        node: Some(node),
        rx,
        tap,
        alerts,
        _watch: watch,
    }
}

impl Running {
    /// Events seen within `wait` that satisfy `pred`.
    fn events(&self, wait: Duration, pred: impl Fn(&SyscallEvent) -> bool) -> Vec<SyscallEvent> {
        let end = Instant::now() + wait;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.tap.recv_timeout(left) {
                Ok(ev) if pred(&ev) => out.push(ev),
                Ok(_) => {}
                Err(_) => break,
            }
        }
        out
    }

    fn found(&mut self) -> Vec<Found> {
        let mut v = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            v.push(f);
        }
        v
    }

    fn stop(&mut self) {
        if let Some(n) = self.node.take() {
            n.stop();
        }
    }

    /// The complete alert JSON lines written so far, parsed, of rule `rule`.
    fn alert_lines(&self, rule: &str) -> Vec<serde_json::Value> {
        let bytes = self.alerts.0.lock().unwrap().clone();
        let text = String::from_utf8(bytes).unwrap();
        let complete = text.rsplit_once('\n').map_or("", |(done, _)| done);
        complete
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l)
                    .unwrap_or_else(|e| panic!("alert line {l:?}: {e}"))
            })
            .filter(|a| a["rule"] == rule)
            .collect()
    }
}

/// The `actions` of an alert line.
fn actions(alert: &serde_json::Value) -> &Vec<serde_json::Value> {
    alert["actions"]
        .as_array()
        .unwrap_or_else(|| panic!("alert without actions: {alert}"))
}

/// A loopback server that answers and closes every connection, counting them.
struct Server {
    port: u16,
    count: Arc<AtomicUsize>,
    seen: usize,
}

fn listener() -> Server {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let count = Arc::new(AtomicUsize::new(0));
    let c2 = count.clone();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let _ = s.write_all(b"ok\n");
            c2.fetch_add(1, Ordering::SeqCst);
        }
    });
    Server {
        port,
        count,
        seen: 0,
    }
}

impl Server {
    /// Connections since the last call.
    fn accepted(&mut self, settle: Duration) -> usize {
        std::thread::sleep(settle);
        let now = self.count.load(Ordering::SeqCst);
        let n = now - self.seen;
        self.seen = now;
        n
    }
}

// ---- cases ------------------------------------------------------------------------------------

const VISIBILITY_RULES: &str = r#"
- macro: spawned_process
  condition: (evt.type in (execve, execveat))
- macro: container
  condition: (container.id != host)
- rule: Exec in test pod
  desc: every exec in a container
  condition: spawned_process and container and k8s.ns.name = "vis"
  output: exec %proc.cmdline in %container.id %k8s.ns.name/%k8s.pod.name parent=%proc.pname gparent=%proc.aname[2]
  priority: NOTICE
  source: syscall
"#;

fn visibility(w: &mut World) {
    let (pod, cid) = w.pod("vis", "web-0");
    let c = w.start(&pod, &cid);
    let mut l = listener();
    let port = l.port;
    let mut run = start_node(w, Some(VISIBILITY_RULES), true, 1);
    assert_tracepoint_capture(run.node.as_ref().unwrap());
    std::thread::sleep(Duration::from_millis(300));
    let (code, out) = w.exec(c, &format!("echo x > /tmp/vis-file; /bin/cat /etc/shadow > /dev/null; echo hi | /bin/nc -w 1 127.0.0.1 {port}; true"));
    assert_eq!(code, 0, "{out}");
    assert!(
        l.accepted(Duration::from_millis(300)) >= 1,
        "the container's connection never arrived"
    );
    // a host process
    let host = Command::new("/bin/true").status().unwrap();
    assert!(host.success());
    let short = &cid[..12];
    let evs = run.events(Duration::from_secs(2), |e| {
        e.container.id == short || e.proc.name == "true"
    });
    let in_ctr: Vec<&SyscallEvent> = evs.iter().filter(|e| e.container.id == short).collect();
    let find = |what: &str, f: &dyn Fn(&SyscallEvent) -> bool| -> SyscallEvent {
        in_ctr
            .iter()
            .find(|e| f(e))
            .map(|e| (*e).clone())
            .unwrap_or_else(|| {
                panic!(
                    "no {what} among {} container events: {:#?}",
                    in_ctr.len(),
                    in_ctr
                        .iter()
                        .map(|e| (&e.evt_type, &e.proc.name, e.fd.as_ref().map(|f| &f.name)))
                        .collect::<Vec<_>>()
                )
            })
    };
    let cat = find("exec of cat", &|e| {
        e.evt_type == "execve" && e.proc.name == "cat"
    });
    assert_eq!(cat.k8s.pod_name, "web-0");
    assert_eq!(cat.k8s.ns_name, "vis");
    assert_eq!(cat.k8s.pod_uid, pod.uid);
    assert_eq!(cat.k8s.node_name, NODE);
    assert_eq!(cat.container.name, "main");
    assert_eq!(cat.container.image_repository, "docker.io/library/busybox");
    assert_eq!(cat.container.image_tag, "1.36");
    assert_eq!(cat.proc.exepath, "/bin/cat");
    assert_eq!(cat.proc.args, vec!["/etc/shadow"]);
    assert_eq!(cat.proc.pname, "sh", "{:?}", cat.proc);
    assert!(
        cat.proc.pcmdline.starts_with("sh -c echo x"),
        "{}",
        cat.proc.pcmdline
    );
    assert!(
        cat.proc
            .ancestors
            .get(1)
            .is_some_and(|a| a.starts_with("runc")),
        "ancestry {:?}",
        cat.proc.ancestors
    );
    let write = find("open for write", &|e| {
        e.evt_type.starts_with("open") && e.fd.as_ref().is_some_and(|f| f.name == "/tmp/vis-file")
    });
    assert!(write.args["flags"].contains("O_WRONLY"), "{:?}", write.args);
    assert_eq!(write.proc.name, "sh");
    let shadow = find("sensitive read", &|e| {
        e.evt_type.starts_with("open") && e.fd.as_ref().is_some_and(|f| f.name == "/etc/shadow")
    });
    assert!(shadow.args["flags"].contains("O_RDONLY"));
    assert_eq!(shadow.k8s.pod_name, "web-0");
    let conn = find("connect", &|e| e.evt_type == "connect");
    let fd = conn.fd.clone().unwrap();
    assert_eq!(
        (fd.sip.as_str(), fd.sport, fd.typechar.as_str()),
        ("127.0.0.1", i64::from(port), "4")
    );
    assert_eq!(conn.proc.name, "nc");
    let host_ev = evs
        .iter()
        .find(|e| e.proc.name == "true" && e.evt_type == "execve")
        .expect("host exec not seen");
    assert_eq!(host_ev.container.id, "host");
    assert!(host_ev.k8s.pod_name.is_empty());
    // alerts: Falco JSON with the pod identity
    std::thread::sleep(Duration::from_millis(200));
    let found = run.found();
    let nfound = found.len();
    let snap = run.node.as_ref().unwrap().snapshot();
    let alerts: Vec<serde_json::Value> = found
        .into_iter()
        .filter_map(|f| match f {
            Found::Alert(a) => Some(serde_json::to_value(&*a).unwrap()),
            _ => None,
        })
        .collect();
    let a = alerts
        .iter()
        .find(|a| a["output_fields"]["proc.cmdline"] == "cat /etc/shadow")
        .unwrap_or_else(|| {
            panic!(
                "no alert for cat among {nfound} found: {alerts:#?}; alerts_total {:?} events {}",
                snap.alerts_total, snap.events_total
            )
        });
    assert_eq!(a["rule"], "Exec in test pod");
    assert_eq!(a["source"], "syscall");
    assert_eq!(a["output_fields"]["container.id"], short);
    assert_eq!(a["output_fields"]["k8s.pod.name"], "web-0");
    assert!(
        a["output"].as_str().unwrap().contains("parent=sh"),
        "{}",
        a["output"]
    );
    assert!(snap.kernel.emitted > 0);
    run.stop();
}

const PREFILTER_RULES: &str = r#"
- macro: open_write
  condition: (evt.type in (open,openat,openat2) and evt.is_open_write=true)
- list: watched_dirs
  items: [/etc]
- rule: Write below watched dir
  desc: a write below /etc
  condition: open_write and fd.directory in (watched_dirs) and k8s.ns.name = "pf"
  output: write %fd.name by %proc.name
  priority: ERROR
  source: syscall
- rule: Write release agent
  desc: a cgroup release_agent written
  condition: open_write and fd.name endswith release_agent
  output: release agent %fd.name
  priority: ERROR
  source: syscall
"#;

/// With the rules' macros and lists known, write-opens no rule can match stay in the kernel;
/// those a rule matches, and sensitive reads, still arrive.
fn write_prefilter(w: &mut World) {
    let (pod, cid) = w.pod("pf", "pf-0");
    let c = w.start(&pod, &cid);
    let (cache, watch) = w.pod_cache();
    w.wait_pods(&cache, 1);
    let (sink, rx) = ChannelSink::new();
    let (tx, tap) = mpsc::channel();
    let mut opts = NodeOptions::new(NODE);
    opts.loader = LoaderOptions {
        pin_dir: pin_dir().into(),
        all_cgroups: true,
        ..LoaderOptions::default()
    };
    let files = [("pf.yaml".to_string(), PREFILTER_RULES.to_string())];
    opts.rules = Some(rules(PREFILTER_RULES));
    opts.definitions = Definitions::from_texts(&files).unwrap();
    opts.pods = cache;
    opts.tap = Some(tx);
    let alerts = SharedBuf::default();
    opts.alerts = Some(Box::new(alerts.clone()));
    let node = Node::start(opts, Arc::new(sink)).unwrap_or_else(|e| panic!("node start: {e}"));
    let mut run = Running {
        node: Some(node),
        rx,
        tap,
        alerts,
        _watch: watch,
    };
    std::thread::sleep(Duration::from_millis(300));
    let before = run.node.as_ref().unwrap().snapshot().kernel.filtered;
    let (code, out) = w.exec(
        c,
        "mkdir -p /tmp/cg; echo a > /etc/tether-pf; echo b > /tmp/tether-pf; echo c > /tmp/cg/release_agent; echo d > /tmp/../etc/tether-pf2; /bin/cat /etc/shadow > /dev/null; true",
    );
    assert_eq!(code, 0, "{out}");
    let short = &cid[..12];
    let evs = run.events(Duration::from_secs(2), |e| e.container.id == short);
    let opened = |name: &str| {
        evs.iter().any(|e| {
            e.evt_type.starts_with("open") && e.fd.as_ref().is_some_and(|f| f.name == name)
        })
    };
    let names: Vec<_> = evs
        .iter()
        .filter_map(|e| e.fd.as_ref().map(|f| f.name.clone()))
        .collect();
    assert!(opened("/etc/tether-pf"), "write below /etc lost: {names:?}");
    assert!(
        opened("/tmp/cg/release_agent"),
        "suffix write lost: {names:?}"
    );
    assert!(
        opened("/tmp/../etc/tether-pf2"),
        "traversal write lost: {names:?}"
    );
    assert!(opened("/etc/shadow"), "sensitive read lost: {names:?}");
    assert!(
        !opened("/tmp/tether-pf"),
        "unmatched write reported: {names:?}"
    );
    let after = run.node.as_ref().unwrap().snapshot().kernel.filtered;
    assert!(
        after > before,
        "filtered counter did not move: {before} -> {after}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let rules_hit: Vec<String> = run
        .found()
        .into_iter()
        .filter_map(|f| match f {
            Found::Alert(a) => Some(a.rule.clone()),
            _ => None,
        })
        .collect();
    assert!(
        rules_hit.iter().any(|r| r == "Write below watched dir"),
        "{rules_hit:?}"
    );
    assert!(
        rules_hit.iter().any(|r| r == "Write release agent"),
        "{rules_hit:?}"
    );
    run.stop();
}

const ENFORCE_RULES: &str = r#"
- rule: Netcat in container
  desc: netcat is not allowed in containers
  condition: evt.type in (execve, execveat) and container.id != host and proc.name = nc
  output: netcat run in %container.id (%proc.cmdline)
  priority: CRITICAL
  source: syscall
  tether:
    mode: enforce
    actions: [block]
"#;

fn enforce_exec_fallback(w: &mut World) {
    let (pod, cid) = w.pod("enf", "api-0");
    let c = w.start(&pod, &cid);
    let mut run = start_node(w, Some(ENFORCE_RULES), false, 1);
    let snap = run.node.as_ref().unwrap().snapshot();
    let p = snap
        .postures
        .iter()
        .find(|p| p.rule == "Netcat in container")
        .unwrap();
    assert_eq!(p.exec_deny, vec!["nc".to_string()], "{p:?}");
    let (code, out) = w.exec(
        c,
        "/bin/nc -h >/dev/null 2>&1; echo rc=$?; echo still-alive",
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("rc=137"),
        "nc was not killed at exec (SIGKILL = 137): {out}"
    );
    assert!(out.contains("still-alive"));
    // the shell itself and other binaries are untouched
    let (code, out) = w.exec(c, "/bin/id -u");
    assert_eq!((code, out.trim()), (0, "0"));
    let evs = run.events(Duration::from_secs(1), |e| {
        e.evt_type == "execve" && e.proc.name == "nc"
    });
    let ev = evs.first().expect("the killed exec is still reported");
    assert!(ev.args.contains_key("killed"), "{:?}", ev.args);
    std::thread::sleep(Duration::from_millis(200));
    let found = run.found();
    assert!(found.iter().any(|f| matches!(f, Found::Action(a) if a.kind == "block" && a.status == "done" && a.target.contains("api-0"))), "no block action record");
    assert!(found
        .iter()
        .any(|f| matches!(f, Found::Alert(a) if a.rule == "Netcat in container")));
    // the alert line says what was done: the kernel's kill at exec, on the pod
    let lines = run.alert_lines("Netcat in container");
    assert!(!lines.is_empty(), "no alert line for the killed exec");
    for a in &lines {
        let acts = actions(a);
        assert_eq!(acts.len(), 1, "{a}");
        let act = &acts[0];
        assert_eq!(
            (&act["kind"], &act["dry_run"], &act["status"]),
            (&"block".into(), &false.into(), &"done".into()),
            "{a}"
        );
        let target = act["target"].as_str().unwrap();
        assert!(target.starts_with("pod/enf/api-0 pid/"), "{target}");
        assert!(
            act["reason"]
                .as_str()
                .is_some_and(|n| n.contains("SIGKILL in the kernel at exec")),
            "the mechanism is not named: {act}"
        );
    }
    // host processes are not watched: nc on the host runs
    let host = Command::new("busybox")
        .args(["nc", "-h"])
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_ne!(host.code(), None, "busybox nc on the host was killed");
    run.stop();
}

const ISOLATE_RULES: &str = r#"
- rule: Trigger file touched
  desc: touching /tmp/trigger isolates the pod
  condition: evt.type = execve and container.id != host and proc.name = touch and k8s.ns.name = "iso"
  output: trigger in %k8s.pod.name
  priority: WARNING
  source: syscall
  tether:
    mode: enforce
    actions: [isolate]
- rule: Trigger file touched (detect)
  desc: the same in detect mode, for the pods of namespace det; a sleep too
  condition: evt.type = execve and container.id != host and proc.name in (touch, sleep) and k8s.ns.name = "det"
  output: trigger in %k8s.pod.name (%proc.cmdline)
  priority: WARNING
  source: syscall
  tether:
    mode: detect
    actions: [isolate, kill]
- rule: Trigger file touched (scoped)
  desc: enforced, but only in namespace iso (the pods of det are outside its scope)
  condition: evt.type = execve and container.id != host and proc.name = touch and k8s.ns.name = "det"
  output: trigger in %k8s.pod.name
  priority: WARNING
  source: syscall
  tether:
    mode: enforce
    actions: [isolate, kill]
    scope: { namespaces: [iso] }
"#;

const SCOPED_RULES: &str = r#"
- rule: Netcat in locked pods
  desc: netcat is killed at exec, but only in pods labelled tier=locked
  condition: evt.type in (execve, execveat) and container.id != host and proc.name = nc
  output: netcat run in %k8s.pod.name (%proc.cmdline)
  priority: CRITICAL
  source: syscall
  tether:
    mode: enforce
    actions: [block]
    scope: { object_labels: { matchLabels: { tier: locked } } }
"#;

/// Runs nc in container `c` until its exit says `killed` (137) or not, within 10 s.
fn until_nc(w: &World, c: usize, killed: bool, what: &str) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
        if out.contains("rc=137") == killed {
            return;
        }
        assert!(Instant::now() < end, "{what}: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn pinned_denies(cg: u64) -> Vec<String> {
    loader::pinned_state(pin_dir())
        .unwrap()
        .unwrap()
        .deny_exec
        .into_iter()
        .filter(|(id, _, _)| *id == cg)
        .map(|(_, name, _)| name)
        .collect()
}

fn pinned_watched(cg: u64) -> bool {
    let data = aya::maps::MapData::from_pin(pin_dir().join("maps/watched_cgroups")).unwrap();
    let map = aya::maps::Map::from_map_data(data).unwrap();
    let watched = aya::maps::HashMap::<_, u64, u8>::try_from(map).unwrap();
    watched.get(&cg, 0).is_ok()
}

/// A scoped exec deny follows the pod's labels: in place where the pod is in the rule's scope
/// at the node's start, added when a pod unknown at its container's first event arrives
/// labelled into the scope, removed when a pod is relabelled out of it, and gone with the
/// cgroup when the pod is deleted; the kernel forgets a removed cgroup.
fn scoped_exec_deny(w: &mut World) {
    let locked_labels = serde_json::json!({"app": "locked-0", "tier": "locked"});
    let (pod_a, cid_a) = w.pod("scp", "locked-0");
    w.set_labels("scp", "locked-0", locked_labels);
    let (pod_b, cid_b) = w.pod("scp", "open-0");
    let (pod_c, cid_c) = w.pod("scp", "late-0");
    let late = w.api().get("pods", Some("scp"), "late-0").unwrap().unwrap();
    assert!(w.api().remove("pods", Some("scp"), "late-0").unwrap());
    let a = w.start(&pod_a, &cid_a);
    let b = w.start(&pod_b, &cid_b);
    let c = w.start(&pod_c, &cid_c);
    let mut run = start_node(w, Some(SCOPED_RULES), false, 2);

    // in scope at start: killed; outside it (no label, pod not known yet): runs
    until_nc(w, a, true, "nc in the locked pod was not killed");
    let (_, out) = w.exec(b, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(
        out.contains("rc=") && !out.contains("rc=137"),
        "nc in the open pod was killed: {out}"
    );
    let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(
        !out.contains("rc=137"),
        "nc killed before its pod was known: {out}"
    );
    let (cg_a, cg_b, cg_c) = (w.cgroup_id(a), w.cgroup_id(b), w.cgroup_id(c));
    assert_eq!(pinned_denies(cg_a), vec!["nc".to_string()]);
    assert!(pinned_denies(cg_b).is_empty());
    assert!(pinned_denies(cg_c).is_empty());

    // the late pod arrives labelled into the scope: its cgroup gets the deny
    let mut late = late;
    late["metadata"]["labels"] = serde_json::json!({"app": "late-0", "tier": "locked"});
    w.api().insert(late).unwrap();
    until_nc(
        w,
        c,
        true,
        "the deny was not added when the late pod arrived in scope",
    );
    assert_eq!(pinned_denies(cg_c), vec!["nc".to_string()]);

    // relabelled out of the scope: the deny goes
    w.set_labels("scp", "locked-0", serde_json::json!({"app": "locked-0"}));
    until_nc(w, a, false, "the deny stayed after the pod left the scope");
    assert!(pinned_denies(cg_a).is_empty());
    // the open pod was never touched
    assert!(pinned_denies(cg_b).is_empty());

    // the late pod's container and cgroup go, then the pod: its deny and watch are dropped
    assert!(
        pinned_watched(cg_c),
        "the container's cgroup is not watched"
    );
    w.stop_one(c);
    let end = Instant::now() + Duration::from_secs(10);
    while pinned_watched(cg_c) {
        assert!(
            Instant::now() < end,
            "the removed cgroup is still in watched_cgroups"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(w.api().remove("pods", Some("scp"), "late-0").unwrap());
    while !pinned_denies(cg_c).is_empty() {
        assert!(
            Instant::now() < end,
            "the removed cgroup's exec deny is still in the kernel"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // the alerts say what was done where
    let lines = run.alert_lines("Netcat in locked pods");
    assert!(
        lines
            .iter()
            .any(|l| l["output_fields"]["k8s.pod.name"] == "late-0"
                && actions(l).iter().any(|x| x["status"] == "done")),
        "no alert with the kill done in the late pod"
    );
    run.stop();
}

fn isolate_and_detect(w: &mut World) {
    let (pa, ca) = w.pod("iso", "victim-0");
    let (pb, cb) = w.pod("iso", "bystander-0");
    let (pc, cc) = w.pod("det", "watched-0");
    let a = w.start(&pa, &ca);
    let b = w.start(&pb, &cb);
    let d = w.start(&pc, &cc);
    let mut l = listener();
    let port = l.port;
    let mut run = start_node(w, Some(ISOLATE_RULES), false, 3);
    let get = format!("echo hi | /bin/nc -w 1 127.0.0.1 {port}; echo rc=$?");
    let (_, out) = w.exec(a, &get);
    assert!(out.contains("rc=0"), "before isolation: {out}");
    assert_eq!(l.accepted(Duration::from_millis(300)), 1);
    w.exec(a, "/bin/touch /tmp/trigger");
    w.exec(d, "/bin/touch /tmp/trigger");
    std::thread::sleep(Duration::from_millis(500));
    let (_, out) = w.exec(a, &get);
    assert!(
        !out.contains("rc=0"),
        "the isolated pod still connects: {out}"
    );
    assert_eq!(
        l.accepted(Duration::from_millis(300)),
        0,
        "a connection from the isolated pod arrived"
    );
    let (_, out) = w.exec(b, &get);
    assert!(
        out.contains("rc=0"),
        "a pod of the same namespace was affected: {out}"
    );
    let (_, out) = w.exec(d, &get);
    assert!(out.contains("rc=0"), "detect mode cut the network: {out}");
    assert_eq!(l.accepted(Duration::from_millis(300)), 2);
    // a detect rule that asks for kill: the process lives on
    let (_, out) = w.exec(d, "/bin/sleep 1; echo rc=$?");
    assert!(
        out.contains("rc=0"),
        "detect mode killed the process: {out}"
    );
    std::thread::sleep(Duration::from_millis(200));
    let denied = run.events(Duration::from_secs(1), |e| {
        e.evt_type == "connect" && e.args.contains_key("denied")
    });
    assert!(
        denied
            .iter()
            .any(|e| e.k8s.pod_name == "victim-0" && e.evt_res < 0),
        "refused connect not reported"
    );
    let found = run.found();
    let isolations: Vec<_> = found
        .iter()
        .filter_map(|f| match f {
            Found::Action(a) if a.kind == "isolate" && !a.dry_run => Some(a),
            _ => None,
        })
        .collect();
    assert_eq!(isolations.len(), 1, "{isolations:?}");
    let victim = format!("pod/iso/victim-0 cgroup/{}", w.cgroup_id(a));
    assert_eq!(isolations[0].target, victim);
    assert_eq!(isolations[0].rule, "Trigger file touched");
    assert!(found
        .iter()
        .any(|f| matches!(f, Found::Alert(al) if al.rule == "Trigger file touched (detect)")));
    // the dry-run actions reach the sink too, and nothing else was done for det
    let det_actions: Vec<_> = found
        .iter()
        .filter_map(|f| match f {
            Found::Action(x) if x.rule != "Trigger file touched" => Some(x),
            _ => None,
        })
        .collect();
    assert!(det_actions.len() >= 6, "{det_actions:?}");
    assert!(
        det_actions
            .iter()
            .all(|x| x.dry_run && x.status == "skipped"),
        "{det_actions:?}"
    );
    // the alert lines: done for the victim ...
    let lines = run.alert_lines("Trigger file touched");
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(
        actions(&lines[0]),
        &vec![
            serde_json::json!({"kind": "isolate", "target": victim, "dry_run": false, "status": "done", "error": null})
        ]
    );
    // ... what enforcement would have done in detect mode, on the watched pod ...
    let watched = format!("pod/det/watched-0 cgroup/{}", w.cgroup_id(d));
    let lines = run.alert_lines("Trigger file touched (detect)");
    let cmds: Vec<&str> = lines
        .iter()
        .filter_map(|a| a["output_fields"]["proc.cmdline"].as_str())
        .collect();
    assert!(
        cmds.iter().any(|c| c.starts_with("touch")) && cmds.iter().any(|c| c.starts_with("sleep")),
        "{cmds:?}"
    );
    for a in &lines {
        let acts = actions(a);
        let kinds: Vec<&str> = acts.iter().filter_map(|x| x["kind"].as_str()).collect();
        assert_eq!(kinds, ["isolate", "kill"], "{a}");
        for x in acts {
            assert_eq!(
                (&x["dry_run"], &x["status"]),
                (&true.into(), &"skipped".into()),
                "{x}"
            );
            assert!(
                x["reason"]
                    .as_str()
                    .is_some_and(|e| e.starts_with("detect mode")),
                "{x}"
            );
        }
        assert_eq!(acts[0]["target"], watched.as_str(), "{a}");
        let kill_target = acts[1]["target"].as_str().unwrap();
        assert!(
            kill_target.starts_with("pod/det/watched-0 pid/"),
            "{kill_target}"
        );
    }
    // ... and why an enforce rule did nothing outside its scope
    let lines = run.alert_lines("Trigger file touched (scoped)");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let acts = actions(&lines[0]);
    assert_eq!(acts.len(), 2, "{acts:?}");
    for x in acts {
        assert_eq!(
            (&x["dry_run"], &x["status"]),
            (&true.into(), &"skipped".into()),
            "{x}"
        );
        let why = x["reason"].as_str().unwrap_or_default();
        assert!(
            why.starts_with("outside the rule's scope: namespace \"det\""),
            "{x}"
        );
    }
    let snap = run.node.as_ref().unwrap().snapshot();
    assert!(snap.kernel.net_denied >= 1);
    run.stop();
}

fn lsm_path(w: &mut World) {
    let btf = aya::Btf::from_sys_fs().unwrap();
    let caps = node_enforcer::Capabilities::probe(&btf, &loader::cgroup2_root().unwrap());
    if let Some(reason) = caps.bpf_lsm.reason() {
        println!("    lsm path not testable on this kernel (the SIGKILL fallback is tested instead): {reason}");
        return;
    }
    let (pod, cid) = w.pod("lsm", "lsm-0");
    let c = w.start(&pod, &cid);
    let mut run = start_node(w, Some(ENFORCE_RULES), false, 1);
    let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(
        out.contains("rc=126") || out.contains("rc=127"),
        "LSM should refuse the exec with EPERM: {out}"
    );
    run.stop();
}

fn restart_readopt_unload(w: &mut World) {
    let (pod, cid) = w.pod("rst", "rst-0");
    let c = w.start(&pod, &cid);
    let rules_path = w.dir.join("restart_rules.yaml");
    std::fs::write(&rules_path, ENFORCE_RULES).unwrap();
    let spawn = || {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("TETHER_TEST_ROLE", "loader")
            .env("TETHER_TEST_RULES", &rules_path)
            .env("TETHER_TEST_PIN_DIR", pin_dir())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        (child, line)
    };
    let (mut first, line) = spawn();
    assert!(line.starts_with("ready adopted=false"), "{line}");
    let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(out.contains("rc=137"), "first loader: {out}");
    first.kill().unwrap();
    first.wait().unwrap();
    // no loader runs: the pinned programs still enforce
    let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(
        out.contains("rc=137"),
        "enforcement did not hold while the loader was down: {out}"
    );
    let (mut second, line) = spawn();
    assert!(
        line.starts_with("ready adopted=true"),
        "the restarted loader did not re-adopt the pins: {line}"
    );
    let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(out.contains("rc=137"), "second loader: {out}");
    second.kill().unwrap();
    second.wait().unwrap();
    let removed = loader::unload(pin_dir()).unwrap();
    assert!(
        removed.iter().any(|p| p.ends_with("links/tether_exec")),
        "{removed:?}"
    );
    assert!(!pin_dir().exists());
    let (_, out) = w.exec(c, "/bin/nc -h >/dev/null 2>&1; echo rc=$?");
    assert!(
        !out.contains("rc=137"),
        "unload left enforcement in place: {out}"
    );
}

/// The loader role of `restart_readopt_unload`: runs until killed.
fn child_loader() -> ExitCode {
    let rules_path = std::env::var("TETHER_TEST_RULES").unwrap();
    let text = std::fs::read_to_string(rules_path).unwrap();
    let (sink, _rx) = ChannelSink::new();
    let mut opts = NodeOptions::new(NODE);
    opts.loader = LoaderOptions {
        pin_dir: pin_dir().into(),
        ..LoaderOptions::default()
    };
    opts.rules = Some(rules(&text));
    let node = Node::start(opts, Arc::new(sink)).unwrap();
    println!("ready adopted={}", node.adopted());
    let _ = std::io::stdout().flush();
    loop {
        std::thread::sleep(Duration::from_secs(60));
    }
}

/// Where the kernel has every syscall tracepoint needed, the default capture uses them: one
/// program pair per syscall of interest, no raw_tp program, and the attachments say so.
fn assert_tracepoint_capture(node: &Node) {
    let tps = SyscallTracepoints::probe();
    let cap = node.syscall_capture();
    if let Some(why) = tps.capability().reason() {
        assert_eq!(cap.mechanism, "raw_tp", "{cap:?}");
        println!("    syscall tracepoints unavailable here, raw_tp pair in use: {why}");
        return;
    }
    assert_eq!(cap.mechanism, "tracepoints", "{cap:?}");
    let hooks: Vec<&str> = node.attachments().iter().map(|a| a.hook.as_str()).collect();
    for sc in &tps.present {
        for dir in ["sys_enter", "sys_exit"] {
            let hook = format!("tracepoint/syscalls/{dir}_{sc}");
            assert!(
                hooks.contains(&hook.as_str()),
                "{hook} not attached: {hooks:?}"
            );
        }
    }
    assert!(
        !hooks.iter().any(|h| h.starts_with("raw_tp/")),
        "a raw_tp program attached beside the tracepoints: {hooks:?}"
    );
    assert!(
        cap.describe().contains("per-syscall tracepoints"),
        "{}",
        cap.describe()
    );
}

/// The raw_tp pair, forced: the same records as the per-syscall tracepoints. Then the same
/// pins taken over by a default start: only the programs in use stay pinned.
fn raw_tp_fallback(w: &mut World) {
    let (pod, cid) = w.pod("raw", "raw-0");
    let c = w.start(&pod, &cid);
    let mut l = listener();
    let port = l.port;
    let mut run = start_node_hook(w, Some(VISIBILITY_RULES), true, 1, SyscallHook::RawTp, None);
    {
        let node = run.node.as_ref().unwrap();
        let cap = node.syscall_capture();
        assert_eq!(cap.mechanism, "raw_tp", "{cap:?}");
        assert!(
            cap.describe().starts_with("raw_tp/sys_enter"),
            "{}",
            cap.describe()
        );
        let hooks: Vec<&str> = node.attachments().iter().map(|a| a.hook.as_str()).collect();
        assert!(
            hooks.contains(&"raw_tp/sys_enter") && hooks.contains(&"raw_tp/sys_exit"),
            "{hooks:?}"
        );
        assert!(
            !hooks.iter().any(|h| h.starts_with("tracepoint/")),
            "{hooks:?}"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, out) = w.exec(
        c,
        &format!("echo x > /tmp/raw-file; /bin/cat /etc/shadow > /dev/null; /bin/cat /etc/passwd > /dev/null; echo hi | /bin/nc -w 1 127.0.0.1 {port}; true"),
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        l.accepted(Duration::from_millis(300)) >= 1,
        "no connection arrived"
    );
    let short = &cid[..12];
    let evs = run.events(Duration::from_secs(2), |e| e.container.id == short);
    let opened = |name: &str| {
        evs.iter().find(|e| {
            e.evt_type.starts_with("open") && e.fd.as_ref().is_some_and(|f| f.name == name)
        })
    };
    let summary: Vec<_> = evs
        .iter()
        .map(|e| {
            (
                e.evt_type.clone(),
                e.proc.name.clone(),
                e.fd.as_ref().map(|f| f.name.clone()),
            )
        })
        .collect();
    let write = opened("/tmp/raw-file").unwrap_or_else(|| panic!("write-open lost: {summary:?}"));
    assert!(write.args["flags"].contains("O_WRONLY"), "{:?}", write.args);
    assert!(write.evt_res >= 0, "{write:?}");
    let shadow =
        opened("/etc/shadow").unwrap_or_else(|| panic!("sensitive read lost: {summary:?}"));
    assert!(shadow.args["flags"].contains("O_RDONLY"));
    assert!(
        opened("/etc/passwd").is_none(),
        "a read that is not sensitive was reported: {summary:?}"
    );
    let conn = evs
        .iter()
        .find(|e| e.evt_type == "connect")
        .unwrap_or_else(|| panic!("connect lost: {summary:?}"));
    assert_eq!(conn.fd.as_ref().unwrap().sport, i64::from(port));
    assert!(
        evs.iter()
            .any(|e| e.evt_type == "execve" && e.proc.name == "cat"),
        "{summary:?}"
    );
    run.stop();
    let links = pin_dir().join("links");
    assert!(links.join("tether_sys_enter").exists());
    let mut run = start_node(w, None, true, 1);
    assert_tracepoint_capture(run.node.as_ref().unwrap());
    if run.node.as_ref().unwrap().syscall_capture().mechanism == "tracepoints" {
        for stale in ["tether_sys_enter", "tether_sys_exit"] {
            assert!(!links.join(stale).exists(), "the raw_tp pin {stale} stayed");
        }
        assert!(links.join("tether_enter_openat").exists());
        assert!(links.join("tether_exit_openat").exists());
    }
    run.stop();

    // A tracepoint the kernel has but refuses to attach: the start falls back to the raw_tp
    // pair, says why, and captures the same syscalls. (A fresh start: pinned links of the
    // same build would be re-adopted without attaching.)
    loader::unload(pin_dir()).unwrap();
    let mut run = start_node_hook(
        w,
        Some(VISIBILITY_RULES),
        true,
        1,
        SyscallHook::Auto,
        Some("tether_enter_openat"),
    );
    {
        let node = run.node.as_ref().unwrap();
        let cap = node.syscall_capture();
        assert_eq!(cap.mechanism, "raw_tp", "{cap:?}");
        if SyscallTracepoints::probe().capability().reason().is_none() {
            let why = cap.reason.as_deref().unwrap_or("");
            assert!(
                why.contains("tracepoint/syscalls/sys_enter_openat") && why.contains("refused"),
                "{why}"
            );
        }
        let hooks: Vec<&str> = node.attachments().iter().map(|a| a.hook.as_str()).collect();
        assert!(hooks.contains(&"raw_tp/sys_enter"), "{hooks:?}");
        assert!(
            !hooks.iter().any(|h| h.starts_with("tracepoint/")),
            "{hooks:?}"
        );
    }
    assert!(links.join("tether_sys_enter").exists());
    for placed_before in ["tether_enter_open", "tether_exit_open"] {
        assert!(
            !links.join(placed_before).exists(),
            "{placed_before}, attached before the refusal, stayed pinned"
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    let (code, out) = w.exec(c, "echo x > /tmp/raw-file-2; true");
    assert_eq!(code, 0, "{out}");
    let evs = run.events(Duration::from_secs(2), |e| {
        e.container.id == short
            && e.evt_type.starts_with("open")
            && e.fd.as_ref().is_some_and(|f| f.name == "/tmp/raw-file-2")
    });
    assert!(!evs.is_empty(), "write-open lost after the fallback");
    run.stop();
}

/// Pins left by a build whose `settings` had another size: that map is recreated (the
/// programs would not load with it), the compatible ones keep their entries.
fn incompatible_pins(w: &mut World) {
    let maps = pin_dir().join("maps");
    std::fs::create_dir_all(&maps).unwrap();
    std::fs::create_dir_all(pin_dir().join("links")).unwrap();
    let bpftool = |args: &[&str]| {
        let out = Command::new("bpftool")
            .args(args)
            .output()
            .unwrap_or_else(|e| {
                panic!("cannot run bpftool ({e}): install the Debian package `bpftool`")
            });
        assert!(
            out.status.success(),
            "bpftool {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let settings = maps.join("settings");
    let isolated = maps.join("isolated_cgrps");
    let (s, i) = (settings.to_str().unwrap(), isolated.to_str().unwrap());
    bpftool(&[
        "map", "create", s, "type", "array", "key", "4", "value", "24", "entries", "1", "name",
        "settings",
    ]);
    bpftool(&[
        "map",
        "create",
        i,
        "type",
        "hash",
        "key",
        "8",
        "value",
        "4",
        "entries",
        "4096",
        "name",
        "isolated_cgrps",
    ]);
    bpftool(&[
        "map", "update", "pinned", i, "key", "42", "0", "0", "0", "0", "0", "0", "0", "value", "7",
        "0", "0", "0",
    ]);
    let mut run = start_node(w, None, true, 0);
    let info = aya::maps::MapData::from_pin(&settings)
        .and_then(|m| m.info())
        .unwrap();
    assert_eq!(
        info.value_size() as usize,
        std::mem::size_of::<node_enforcer::abi::Config>()
    );
    let state = loader::pinned_state(pin_dir()).unwrap().unwrap();
    assert_eq!(state.isolated_cgroups, vec![42], "{state:?}");
    run.stop();
}

fn bad_input(_w: &mut World) {
    let cases = [
        ("unknown field", "- rule: R1\n  desc: d\n  condition: proc.nosuchfield = x\n  output: o\n  priority: WARNING\n  source: syscall\n", "proc.nosuchfield"),
        ("bad syntax", "- rule: R2\n  desc: d\n  condition: proc.name = = nc\n  output: o\n  priority: WARNING\n  source: syscall\n", "R2"),
        ("unknown output field", "- rule: R3\n  desc: d\n  condition: proc.name = nc\n  output: \"%proc.bogus\"\n  priority: WARNING\n  source: syscall\n", "proc.bogus"),
        ("bad action", "- rule: R4\n  desc: d\n  condition: proc.name = nc\n  output: o\n  priority: WARNING\n  source: syscall\n  tether: {mode: enforce, actions: [explode]}\n", "explode"),
    ];
    for (what, text, needle) in cases {
        match RuleSet::from_texts(&[("bad.yaml".to_string(), text.to_string())]) {
            Ok(_) => panic!("{what}: a malformed syscall rule loaded"),
            Err(e) => {
                let msg = e.to_string();
                assert!(
                    msg.contains(needle) && msg.contains("bad.yaml"),
                    "{what}: error does not name {needle:?} and the file: {msg}"
                );
            }
        }
    }
    // a file-write block cannot be had without BPF LSM: loud, degraded posture
    let rs = rules(
        "- rule: No writes below etc\n  desc: d\n  condition: evt.type in (open, openat) and evt.is_open_write = true and fd.directory = /etc\n  output: o\n  priority: ERROR\n  source: syscall\n  tether: {mode: enforce, actions: [block]}\n",
    );
    let btf = aya::Btf::from_sys_fs().unwrap();
    let caps = node_enforcer::Capabilities::probe(&btf, &loader::cgroup2_root().unwrap());
    let postures = node_enforcer::posture::compute(&rs, &caps);
    let p = &postures[0];
    if caps.bpf_lsm.is_available() {
        assert!(!p.degraded, "{p:?}");
    } else {
        assert!(p.degraded, "{p:?}");
        assert!(p.warnings.iter().any(|w| w.contains("BPF LSM")), "{p:?}");
    }
    // garbage ring-buffer records are errors, never panics
    for bytes in [&[][..], &[1, 0, 0][..], &[9u8; 80][..], &[1u8; 200][..]] {
        assert!(node_enforcer::decode(bytes).is_err());
    }
}
