//! `tether up`: every Tether role on this host, with embedded defaults.
//!
//! It makes a CA and serving certificate in the state directory (once), then runs each
//! role as a child process of this same binary — exactly the commands a cluster runs, one
//! process per role:
//!
//! - `tether webhook` on `--webhook-listen` (HTTPS, the bundled library, a decision log);
//! - `tether audit-bridge` with its audit webhook backend on `--audit-listen` and any
//!   `--audit-file`s, metrics on `--audit-metrics-listen`;
//! - `tether node` (eBPF) when this process runs as root, metrics on `--node-metrics-listen`;
//!   otherwise it says why it is left out.
//!
//! Alerts of every role are Falco JSON lines on stdout; logs go to stderr. SIGINT/SIGTERM
//! stop every role. A role that exits is reported with its status; `up` keeps the others
//! running and exits when none is left (non-zero if any failed).
//!
//! The roles share nothing in memory: each hands what it finds to its own sink. Joining
//! exec sessions across roles is the engine bus's job.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use clap::Args;
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

#[derive(Debug, Args)]
pub struct UpArgs {
    /// Where certificates, decision logs, spools and checkpoints are kept.
    #[arg(long, value_name = "DIR", default_value = ".tether")]
    pub state_dir: PathBuf,
    /// Rules files for every role (default: the bundled library).
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// The admission webhook's HTTPS address.
    #[arg(long, default_value = "127.0.0.1:8443")]
    pub webhook_listen: SocketAddr,
    /// The audit webhook backend's HTTPS address (point kube-apiserver's
    /// `--audit-webhook-config-file` at it).
    #[arg(long, default_value = "127.0.0.1:8444")]
    pub audit_listen: SocketAddr,
    /// The audit bridge's Prometheus endpoint (plain HTTP, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:9464")]
    pub audit_metrics_listen: SocketAddr,
    /// The node enforcer's Prometheus endpoint (plain HTTP, `/metrics`).
    #[arg(long, default_value = "127.0.0.1:9477")]
    pub node_metrics_listen: SocketAddr,
    /// Audit log files (JSON lines) to tail.
    #[arg(long = "audit-file", value_name = "PATH")]
    pub audit_files: Vec<PathBuf>,
    /// Run every rule in detect mode.
    #[arg(long)]
    pub detect_only: bool,
    /// Leave out the eBPF node enforcer.
    #[arg(long)]
    pub no_node: bool,
    /// Let the node enforcer watch host processes too, not only containers.
    #[arg(long)]
    pub all_cgroups: bool,
}

struct Role {
    name: &'static str,
    child: Child,
}

pub fn run(args: UpArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tether up: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(supervise(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tether up: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn supervise(args: UpArgs) -> Result<ExitCode, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this executable: {e}"))?;
    let state = &args.state_dir;
    std::fs::create_dir_all(state)
        .map_err(|e| format!("cannot create state directory {}: {e}", state.display()))?;
    let certs = state.join("certs");
    ensure_certs(&exe, &certs).await?;
    let cert = certs.join("tls.crt");
    let key = certs.join("tls.key");
    let token = state.join("audit-token");
    ensure_token(&token)?;

    let mut roles = Vec::new();

    let mut webhook = vec![
        "webhook".into(),
        "--listen".into(),
        args.webhook_listen.to_string(),
        "--tls-cert".into(),
        path_arg(&cert),
        "--tls-key".into(),
        path_arg(&key),
        "--decision-log".into(),
        path_arg(&state.join("decisions.jsonl")),
    ];
    if args.detect_only {
        webhook.push("--detect-only".into());
    }
    push_rules(&mut webhook, &args.rules);
    roles.push(spawn(&exe, "webhook", &webhook)?);

    let mut bridge = vec![
        "audit-bridge".into(),
        "--state-dir".into(),
        path_arg(&state.join("audit-bridge")),
        "--alerts".into(),
        "-".into(),
        "--listen".into(),
        args.audit_listen.to_string(),
        "--tls-cert".into(),
        path_arg(&cert),
        "--tls-key".into(),
        path_arg(&key),
        "--token-file".into(),
        path_arg(&token),
        "--metrics-addr".into(),
        args.audit_metrics_listen.to_string(),
    ];
    for file in &args.audit_files {
        bridge.push("--file".into());
        bridge.push(path_arg(file));
    }
    push_rules(&mut bridge, &args.rules);
    roles.push(spawn(&exe, "audit-bridge", &bridge)?);

    if args.no_node {
        eprintln!("tether up: node enforcer left out (--no-node)");
    } else if !is_root() {
        eprintln!(
            "tether up: node enforcer left out: loading eBPF programs needs root (run as root, or pass --no-node to silence this)"
        );
    } else {
        let mut node = vec![
            "node".into(),
            "--alerts".into(),
            "-".into(),
            "--metrics-addr".into(),
            args.node_metrics_listen.to_string(),
        ];
        if args.all_cgroups {
            node.push("--all-cgroups".into());
        }
        push_rules(&mut node, &args.rules);
        roles.push(spawn(&exe, "node", &node)?);
    }

    eprintln!(
        "tether up: admission webhook https://{} (CA {}, metrics at /metrics), audit webhook backend https://{}/audit (bearer token in {}, metrics http://{}/metrics){}; alerts on stdout; Ctrl-C stops",
        args.webhook_listen,
        certs.join("ca.crt").display(),
        args.audit_listen,
        token.display(),
        args.audit_metrics_listen,
        if roles.iter().any(|r| r.name == "node") {
            format!(", node metrics http://{}/metrics", args.node_metrics_listen)
        } else {
            String::new()
        },
    );

    let mut sigint = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut failed = false;
    while !roles.is_empty() {
        tokio::select! {
            _ = sigint.recv() => { stop_all(&mut roles).await; break; }
            _ = sigterm.recv() => { stop_all(&mut roles).await; break; }
            (index, status) = first_exit(&mut roles) => {
                let role = roles.swap_remove(index);
                match status {
                    Ok(s) if s.success() => eprintln!("tether up: {} exited", role.name),
                    Ok(s) => { failed = true; eprintln!("tether up: {} exited with {s}", role.name) }
                    Err(e) => { failed = true; eprintln!("tether up: cannot wait for {}: {e}", role.name) }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Generates the CA and serving certificate unless the state directory already has them.
async fn ensure_certs(exe: &Path, dir: &Path) -> Result<(), String> {
    if ["ca.crt", "tls.crt", "tls.key"]
        .iter()
        .all(|f| dir.join(f).is_file())
    {
        return Ok(());
    }
    let status = Command::new(exe)
        .args([
            "certs",
            "generate",
            "--dns",
            "localhost",
            "--ip",
            "127.0.0.1",
        ])
        .arg("--out")
        .arg(dir)
        .stdout(Stdio::null())
        .status()
        .await
        .map_err(|e| format!("cannot run `tether certs generate`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!(
            "`tether certs generate --out {}` failed with {status}",
            dir.display()
        ))
    }
}

/// Makes the bearer token the API server presents to the audit webhook backend, once
/// (32 random bytes from the kernel, hex, mode 0600).
fn ensure_token(path: &Path) -> Result<(), String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    if path.is_file() {
        return Ok(());
    }
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, hex.as_bytes()))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

fn spawn(exe: &Path, name: &'static str, args: &[String]) -> Result<Role, String> {
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot start {name}: {e}"))?;
    Ok(Role { name, child })
}

/// Waits for the first role to exit; returns its index and status.
async fn first_exit(roles: &mut [Role]) -> (usize, std::io::Result<std::process::ExitStatus>) {
    let waits = roles.iter_mut().map(|r| Box::pin(r.child.wait()));
    let (status, index, _) = futures::future::select_all(waits).await;
    (index, status)
}

async fn stop_all(roles: &mut Vec<Role>) {
    for role in roles.iter() {
        if let Some(pid) = role.child.id() {
            // SIGTERM lets each role flush its spool, checkpoints and pins as it does in a cluster.
            if let Ok(pid) = i32::try_from(pid) {
                // SAFETY: kill(2) with a pid we spawned and a valid signal number has no
                // memory-safety preconditions.
                unsafe {
                    libc::kill(pid, libc::SIGTERM);
                }
            }
        }
    }
    for mut role in roles.drain(..) {
        match tokio::time::timeout(std::time::Duration::from_secs(10), role.child.wait()).await {
            Ok(Ok(status)) => eprintln!("tether up: {} stopped ({status})", role.name),
            _ => {
                eprintln!(
                    "tether up: {} did not stop within 10s; killing it",
                    role.name
                );
                let _ = role.child.kill().await;
            }
        }
    }
}

fn push_rules(args: &mut Vec<String>, rules: &[PathBuf]) {
    for r in rules {
        args.push("--rules".into());
        args.push(path_arg(r));
    }
}

fn path_arg(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn is_root() -> bool {
    // SAFETY: geteuid(2) has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}
