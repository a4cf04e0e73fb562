//! Prometheus text exposition of the node's counters, served on `--metrics-addr`.
//! Each thing worth counting is one named field here; names end in `_total`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex};

use crate::loader::Counters;
use crate::posture::RulePosture;
use crate::probe::Capabilities;

/// Everything the metrics endpoint and `tether node status` show.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Snapshot {
    pub kernel: Counters,
    pub records_total: BTreeMap<String, u64>,
    pub decode_errors_total: u64,
    pub events_total: u64,
    pub alerts_total: BTreeMap<String, u64>,
    pub actions_total: BTreeMap<String, u64>,
    pub action_errors_total: u64,
    pub postures: Vec<RulePosture>,
    pub capabilities: Option<Capabilities>,
}

fn esc(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Snapshot {
    pub fn render(&self) -> String {
        let mut o = String::new();
        let k = &self.kernel;
        let _ = writeln!(o, "# TYPE tether_node_kernel_events_emitted_total counter");
        let _ = writeln!(o, "# TYPE tether_node_kernel_events_lost_total counter");
        let _ = writeln!(o, "# TYPE tether_node_kernel_events_filtered_total counter");
        for (cpu, [e, l, f]) in k.per_cpu.iter().enumerate() {
            let _ = writeln!(
                o,
                "tether_node_kernel_events_emitted_total{{cpu=\"{cpu}\"}} {e}"
            );
            let _ = writeln!(
                o,
                "tether_node_kernel_events_lost_total{{cpu=\"{cpu}\"}} {l}"
            );
            let _ = writeln!(
                o,
                "tether_node_kernel_events_filtered_total{{cpu=\"{cpu}\"}} {f}"
            );
        }
        let _ = writeln!(
            o,
            "# TYPE tether_node_exec_killed_total counter\ntether_node_exec_killed_total {}",
            k.exec_killed
        );
        let _ = writeln!(
            o,
            "# TYPE tether_node_connect_denied_total counter\ntether_node_connect_denied_total {}",
            k.net_denied
        );
        let _ = writeln!(o, "# TYPE tether_node_pending_map_full_total counter\ntether_node_pending_map_full_total {}", k.pending_full);
        let _ = writeln!(o, "# TYPE tether_node_records_total counter");
        for (kind, n) in &self.records_total {
            let _ = writeln!(o, "tether_node_records_total{{kind=\"{}\"}} {n}", esc(kind));
        }
        let _ = writeln!(
            o,
            "# TYPE tether_node_decode_errors_total counter\ntether_node_decode_errors_total {}",
            self.decode_errors_total
        );
        let _ = writeln!(
            o,
            "# TYPE tether_node_events_total counter\ntether_node_events_total {}",
            self.events_total
        );
        let _ = writeln!(o, "# TYPE tether_node_alerts_total counter");
        for (rule, n) in &self.alerts_total {
            let _ = writeln!(o, "tether_node_alerts_total{{rule=\"{}\"}} {n}", esc(rule));
        }
        let _ = writeln!(o, "# TYPE tether_node_actions_total counter");
        for (kind, n) in &self.actions_total {
            let _ = writeln!(o, "tether_node_actions_total{{kind=\"{}\"}} {n}", esc(kind));
        }
        let _ = writeln!(
            o,
            "# TYPE tether_node_action_errors_total counter\ntether_node_action_errors_total {}",
            self.action_errors_total
        );
        let _ = writeln!(o, "# TYPE tether_node_rule_posture gauge");
        for p in &self.postures {
            let _ = writeln!(
                o,
                "tether_node_rule_posture{{rule=\"{}\",mode=\"{}\",degraded=\"{}\",kernel_exec_deny=\"{}\",isolates=\"{}\"}} 1",
                esc(&p.rule),
                p.mode,
                p.degraded,
                !p.exec_deny.is_empty(),
                p.isolates
            );
        }
        let _ = writeln!(
            o,
            "# TYPE tether_node_rules_degraded gauge\ntether_node_rules_degraded {}",
            self.postures.iter().filter(|p| p.degraded).count()
        );
        if let Some(c) = &self.capabilities {
            let _ = writeln!(o, "# TYPE tether_node_capability gauge");
            for (name, probe) in [
                ("bpf_lsm", &c.bpf_lsm),
                ("tp_btf", &c.tp_btf),
                ("cgroup_sock_addr", &c.cgroup_sock_addr),
                ("send_signal", &c.send_signal),
                ("syscall_tracepoints", &c.syscall_tracepoints),
            ] {
                let _ = writeln!(
                    o,
                    "tether_node_capability{{name=\"{name}\"}} {}",
                    u8::from(probe.is_available())
                );
            }
        }
        o
    }
}

/// Serves `GET /metrics` (any path) from `snapshot` on a background thread.
pub fn serve(addr: SocketAddr, snapshot: Arc<Mutex<Snapshot>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new().name("tether-metrics".into()).spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let body = snapshot.lock().map(|s| s.render()).unwrap_or_default();
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
                body.len(),
                body
            );
        }
    })?;
    Ok(local)
}
