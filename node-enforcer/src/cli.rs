//! `tether node`, `tether node status`, `tether node unload`: the command-line surface of
//! the node enforcer (the `tether` binary wires it in).

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Args, Subcommand, ValueEnum};
use engine::{ChannelSink, Found};
use policies::RuleSet;
use tokio_util::sync::CancellationToken;

use crate::loader::{self, LoaderOptions, SyscallCapture, SyscallHook, PIN_DIR};
use crate::node::{Node, NodeOptions};
use crate::pods::{self, PodCache};
use crate::posture;
use crate::prefilter::{self, Definitions, WriteFilter};
use crate::probe::{Capabilities, SyscallTracepoints};

/// Runs the eBPF node enforcer, or inspects / removes what it pinned.
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub command: Option<NodeCommand>,
    #[command(flatten)]
    pub run: RunArgs,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Print the probed kernel capabilities and, per rule, its enforcement posture.
    Status(StatusArgs),
    /// Remove every pinned program, map and link (enforcement stops).
    Unload(UnloadArgs),
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Rules files (Falco format), loaded in order; only `source: syscall` rules run here.
    /// Without any, the bundled library's syscall rules (Falco's stable rules) run.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Where Falco JSON alert lines go: a file, or `-` for stdout.
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    pub alerts: String,
    /// Watch every cgroup, host processes too (default: Kubernetes containers only).
    #[arg(long)]
    pub all_cgroups: bool,
    /// This node's name, for the pod watch (`spec.nodeName`); defaults to the host name.
    #[arg(long, env = "NODE_NAME")]
    pub node_name: Option<String>,
    /// Pod metadata source: `auto` watches pods when KUBECONFIG or an in-cluster service
    /// account is present, `on` requires it, `off` uses cgroup paths alone.
    #[arg(long, value_enum, default_value = "auto")]
    pub kube: KubeMode,
    /// Serve Prometheus metrics on this address (e.g. 127.0.0.1:9477).
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// bpffs directory of the pins.
    #[arg(long, default_value = PIN_DIR)]
    pub pin_dir: PathBuf,
    /// Syscall capture: `auto` uses one program per syscall of interest on the
    /// `syscalls/sys_enter_*`/`sys_exit_*` tracepoints where the kernel has them all, else
    /// the `raw_tp/sys_enter`/`sys_exit` pair; `raw-tp` forces the pair.
    #[arg(long, value_enum, env = "TETHER_SYSCALL_HOOK", default_value = "auto")]
    pub syscall_hook: SyscallHook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KubeMode {
    Auto,
    On,
    Off,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Rules files whose posture to report (default: the bundled library, as `tether node`).
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    #[arg(long, value_enum, default_value = "text")]
    pub output: Output,
    #[arg(long, default_value = PIN_DIR)]
    pub pin_dir: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Args)]
pub struct UnloadArgs {
    #[arg(long, default_value = PIN_DIR)]
    pub pin_dir: PathBuf,
}

/// Entry point of `tether node ...`.
pub fn run(args: NodeArgs) -> ExitCode {
    match args.command {
        Some(NodeCommand::Status(s)) => status(&s),
        Some(NodeCommand::Unload(u)) => unload(&u),
        None => run_node(args.run),
    }
}

type LoadedRules = (Option<Arc<RuleSet>>, Definitions);

/// The rules files given, or the bundled library (its `syscall` rules: Falco's stable rules)
/// when none are; and their macros and lists, for the write-open prefilter.
fn load_rules(paths: &[PathBuf]) -> Result<LoadedRules, String> {
    let texts = if paths.is_empty() {
        policies::rules::bundled_files()
            .iter()
            .map(|(name, text)| ((*name).to_string(), (*text).to_string()))
            .collect()
    } else {
        // Read once, as `RuleSet::load` reads them (a directory stands for its YAML files).
        RuleSet::read_files(paths).map_err(|e| e.to_string())?
    };
    let rules = RuleSet::from_texts(&texts).map_err(|e| e.to_string())?;
    let defs = Definitions::from_texts(&texts).map_err(|e| e.to_string())?;
    Ok((Some(Arc::new(rules)), defs))
}

fn run_node(args: RunArgs) -> ExitCode {
    let (rules, definitions) = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("tether node: the rules do not load");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .thread_name("tether-node")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether node: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let alerts: Box<dyn Write + Send> = if args.alerts == "-" {
        Box::new(std::io::stdout())
    } else {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&args.alerts)
        {
            Ok(f) => Box::new(std::io::BufWriter::new(f)),
            Err(e) => {
                eprintln!(
                    "tether node: cannot open the alerts file {}: {e}",
                    args.alerts
                );
                return ExitCode::FAILURE;
            }
        }
    };
    let node_name = args
        .node_name
        .clone()
        .unwrap_or_else(crate::node::hostname_string);
    let shutdown = CancellationToken::new();
    let cache = PodCache::new();
    let want_kube = match args.kube {
        KubeMode::Off => false,
        KubeMode::On => true,
        KubeMode::Auto => {
            std::env::var_os("KUBECONFIG").is_some()
                || std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        }
    };
    if want_kube {
        let client = rt.block_on(kube::Client::try_default());
        match client {
            Ok(c) => {
                rt.spawn(pods::watch_namespaces(
                    c.clone(),
                    cache.clone(),
                    shutdown.clone(),
                ));
                rt.spawn(pods::watch_pods(
                    c,
                    node_name.clone(),
                    cache.clone(),
                    shutdown.clone(),
                ));
                tracing::info!(node = %node_name, "watching this node's pods and the namespaces' labels");
            }
            Err(e) => {
                eprintln!("tether node: no Kubernetes client ({e}); pass --kube off to use cgroup paths alone");
                return ExitCode::FAILURE;
            }
        }
    } else {
        tracing::info!("no cluster configured: containers are named by their cgroup paths alone");
    }
    let (sink, mut rx) = ChannelSink::new();
    rt.spawn(async move {
        while let Some(found) = rx.recv().await {
            if let Found::Action(a) = found {
                tracing::info!(kind = %a.kind, target = %a.target, rule = %a.rule, dry_run = a.dry_run, status = %a.status, error = ?a.error, "action");
            }
        }
    });
    let mut opts = NodeOptions::new(node_name);
    opts.loader = LoaderOptions {
        pin_dir: args.pin_dir.clone(),
        all_cgroups: args.all_cgroups,
        syscall_hook: args.syscall_hook,
        ..LoaderOptions::default()
    };
    opts.rules = rules;
    opts.definitions = definitions;
    opts.pods = cache;
    opts.alerts = Some(alerts);
    opts.metrics_addr = args.metrics_addr;
    let node = match Node::start(opts, Arc::new(sink)) {
        Ok(n) => n,
        Err(e) => {
            eprintln!("tether node: {e}");
            return ExitCode::FAILURE;
        }
    };
    for p in node.snapshot().postures.iter().filter(|p| p.degraded) {
        eprintln!(
            "tether node: WARNING rule \"{}\" cannot be enforced as asked: {}",
            p.rule,
            p.warnings.join("; ")
        );
    }
    if let Some(addr) = node.metrics_addr {
        tracing::info!(%addr, "metrics served");
    }
    tracing::info!(adopted = node.adopted(), syscalls = %node.syscall_capture().describe(), "tether node running");
    let stop = shutdown.clone();
    rt.spawn(async move {
        engine::shutdown_signal().await;
        stop.cancel();
    });
    rt.block_on(node.run_until(shutdown));
    eprintln!("tether node: stopped; the kernel programs stay pinned under {} (`tether node unload` removes them)", args.pin_dir.display());
    ExitCode::SUCCESS
}

#[derive(serde::Serialize)]
struct StatusReport {
    capabilities: Capabilities,
    pinned: Option<loader::PinnedState>,
    rules: Vec<posture::RulePosture>,
    write_prefilter: WriteFilter,
    /// The syscall capture a start (`--syscall-hook auto`) would use on this kernel.
    syscall_capture: SyscallCapture,
}

fn status(args: &StatusArgs) -> ExitCode {
    if let Err(e) = loader::require_root() {
        eprintln!("tether node status: {e}");
        return ExitCode::FAILURE;
    }
    let (rules, definitions) = match load_rules(&args.rules) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let btf = match aya::Btf::from_sys_fs() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tether node status: cannot read kernel BTF: {e}");
            return ExitCode::FAILURE;
        }
    };
    let root = match loader::cgroup2_root() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tether node status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let caps = Capabilities::probe(&btf, &root);
    let postures = rules
        .as_deref()
        .map(|r| posture::compute(r, &caps))
        .unwrap_or_default();
    let pinned = match loader::pinned_state(&args.pin_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("tether node status: {e}");
            return ExitCode::FAILURE;
        }
    };
    let write_prefilter = prefilter::compute(rules.as_deref(), &definitions);
    let report = StatusReport {
        capabilities: caps,
        pinned,
        rules: postures,
        write_prefilter,
        syscall_capture: SyscallCapture::decide(SyscallHook::Auto, &SyscallTracepoints::probe()),
    };
    match args.output {
        Output::Json => match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("tether node status: {e}");
                return ExitCode::FAILURE;
            }
        },
        Output::Text => print!("{}", render_text(&report, &args.pin_dir)),
    }
    ExitCode::SUCCESS
}

fn render_text(r: &StatusReport, pin_dir: &Path) -> String {
    let mut o = String::from("capabilities:\n");
    let c = &r.capabilities;
    for (name, p) in [
        ("bpf_lsm", &c.bpf_lsm),
        ("tp_btf", &c.tp_btf),
        ("cgroup_sock_addr", &c.cgroup_sock_addr),
        ("send_signal", &c.send_signal),
        ("syscall_tracepoints", &c.syscall_tracepoints),
    ] {
        match p.reason() {
            None => o.push_str(&format!("  {name:<19} available\n")),
            Some(why) => o.push_str(&format!("  {name:<19} UNAVAILABLE: {why}\n")),
        }
    }
    o.push_str(&format!(
        "syscall capture: {}\n",
        r.syscall_capture.describe()
    ));
    match &r.pinned {
        None => o.push_str(&format!("pinned: nothing under {}\n", pin_dir.display())),
        Some(p) => {
            o.push_str(&format!(
                "pinned under {}: {} links ({})\n",
                p.pin_dir.display(),
                p.links.len(),
                p.links.join(", ")
            ));
            if let Some(m) = &p.syscall_capture {
                o.push_str(&format!("pinned syscall capture: {m}\n"));
            }
            if let Some(k) = &p.counters {
                o.push_str(&format!(
                    "kernel counters: emitted {} lost {} filtered {} exec_killed {} connect_denied {}\n",
                    k.emitted, k.lost, k.filtered, k.exec_killed, k.net_denied
                ));
            }
            o.push_str(&format!(
                "watched cgroups: {}; isolated cgroups: {:?}\n",
                p.watched_cgroups, p.isolated_cgroups
            ));
            for (cg, name, rule) in &p.deny_exec {
                let scope = if *cg == 0 {
                    "every watched cgroup".to_string()
                } else {
                    format!("cgroup {cg}")
                };
                o.push_str(&format!("exec deny: {name} in {scope} (rule #{rule})\n"));
            }
        }
    }
    o.push_str(&format!(
        "write-open prefilter: {}\n",
        r.write_prefilter.summary()
    ));
    if !r.rules.is_empty() {
        o.push_str("rules:\n");
    }
    for p in &r.rules {
        let flag = if p.degraded { " DEGRADED" } else { "" };
        o.push_str(&format!("  {} [{}{}]\n", p.rule, p.mode, flag));
        for m in &p.mechanisms {
            o.push_str(&format!("    - {m}\n"));
        }
        for w in &p.warnings {
            o.push_str(&format!("    ! {w}\n"));
        }
    }
    o
}

fn unload(args: &UnloadArgs) -> ExitCode {
    if let Err(e) = loader::require_root() {
        eprintln!("tether node unload: {e}");
        return ExitCode::FAILURE;
    }
    if !args.pin_dir.exists() {
        eprintln!(
            "tether node unload: nothing pinned under {}",
            args.pin_dir.display()
        );
        return ExitCode::SUCCESS;
    }
    match loader::unload(&args.pin_dir) {
        Ok(removed) => {
            for p in &removed {
                println!("removed {}", p.display());
            }
            eprintln!(
                "tether node unload: {} pins removed; programs detached",
                removed.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("tether node unload: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_directories_and_files_load_with_their_definitions() {
        let dir = tempfile::tempdir().unwrap();
        let rules = dir.path().join("rules.d");
        std::fs::create_dir(&rules).unwrap();
        std::fs::write(rules.join("b.yaml"), "- list: b\n  items: []\n").unwrap();
        std::fs::write(rules.join("a.yml"), "- list: a\n  items: []\n").unwrap();
        std::fs::write(rules.join("notes.txt"), "not rules").unwrap();
        let single = dir.path().join("z.yaml");
        std::fs::write(&single, "- list: z\n  items: []\n").unwrap();
        // the directory and the file load as rules, with their macros and lists for the
        // prefilter
        let (set, _defs) = load_rules(&[rules, single]).unwrap();
        assert!(set.is_some());

        let missing = dir.path().join("missing.yaml");
        let err = load_rules(std::slice::from_ref(&missing)).unwrap_err();
        assert!(err.contains("missing.yaml"), "{err}");
    }

    #[test]
    fn no_rules_files_load_the_bundled_library() {
        let (set, _defs) = load_rules(&[]).unwrap();
        let set = set.unwrap();
        assert!(set
            .rules()
            .iter()
            .any(|r| r.name == "Terminal shell in container"));
    }
}
