//! `tether node status` / `unload` / bad rules, through the real binary (root: the status
//! probe loads eBPF programs; without root it must fail saying so).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

fn tether() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tether"))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc_geteuid() == 0 }
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

/// `tether node status --output json` parsed; `None` when not root, after checking that it
/// then fails saying so.
fn status_json(pin_dir: &str, extra: &[&str]) -> Option<serde_json::Value> {
    let out = tether()
        .args(["node", "status", "--output", "json", "--pin-dir", pin_dir])
        .args(extra)
        .output()
        .unwrap();
    if !is_root() {
        assert!(!out.status.success());
        assert!(String::from_utf8_lossy(&out.stderr).contains("must run as root"));
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).unwrap())
}

#[test]
fn status_reports_capabilities_and_posture_as_json() {
    let rules = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/fixtures/falco-rules/falco_rules.yaml"
    );
    let Some(v) = status_json("/sys/fs/bpf/tether-clitest", &["--rules", rules]) else {
        return;
    };
    assert_eq!(v["capabilities"]["tp_btf"]["status"], "available", "{v}");
    for cap in ["bpf_lsm", "cgroup_sock_addr", "send_signal"] {
        let s = &v["capabilities"][cap];
        assert!(
            s["status"] == "available" || s["reason"].as_str().is_some_and(|r| !r.is_empty()),
            "{cap}: {s}"
        );
    }
    assert!(
        v["pinned"].is_null(),
        "nothing is pinned under the test directory"
    );
    let rules = v["rules"].as_array().unwrap();
    assert!(
        rules
            .iter()
            .any(|r| r["rule"] == "Terminal shell in container" && r["mode"] == "detect"),
        "{rules:?}"
    );
}

/// Without `--rules` the node runs the bundled library's syscall rules (Falco's stable rules
/// and the library's session rule): the status reports their posture and the write-open
/// prefilter computed from them.
#[test]
fn status_without_rules_reports_the_bundled_library() {
    let Some(v) = status_json("/sys/fs/bpf/tether-clitest-bundled", &[]) else {
        return;
    };
    let rules: Vec<&str> = v["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["rule"].as_str())
        .collect();
    for expected in [
        "Terminal shell in container",
        "Read sensitive file untrusted",
        "Exec Session In Protected Pod",
    ] {
        assert!(rules.contains(&expected), "{expected} missing: {rules:?}");
    }
    // only syscall rules: no admission or audit rule has a node posture
    assert!(!rules.contains(&"Attach/Exec Pod"), "{rules:?}");
    assert_eq!(
        v["write_prefilter"]["mode"], "paths",
        "{}",
        v["write_prefilter"]
    );
}

#[test]
fn unload_of_nothing_succeeds_and_says_so() {
    if !is_root() {
        return;
    }
    let out = tether()
        .args([
            "node",
            "unload",
            "--pin-dir",
            "/sys/fs/bpf/tether-clitest-none",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing pinned"));
}

#[test]
fn malformed_syscall_rules_fail_with_file_and_field() {
    let dir = std::env::temp_dir().join(format!("tether-node-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "- rule: Bad\n  desc: d\n  condition: proc.nosuch = 1\n  output: o\n  priority: WARNING\n  source: syscall\n").unwrap();
    let out = tether()
        .args(["node", "--kube", "off", "--rules"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml") && err.contains("proc.nosuch"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
