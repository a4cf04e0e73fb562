//! Node enforcer overhead benchmark (run as root):
//!
//! `cargo run --release -p node-enforcer --example bench_node -- TETHER_BIN RULES_FILE`
//!
//! Side by side in one run, on the host (so `tether node` runs with `--all-cgroups`):
//! no tracing; `tether node` with the given rules three times: the write-open prefilter
//! forced off (before it), on, and on with `--syscall-hook raw-tp` (the raw_tp pair instead
//! of per-syscall tracepoints); `bpftrace` printing the same events; `auditd` with syscall
//! rules for the same events. Workloads, each the best of ROUNDS short rounds: a fork+exec
//! loop (`/bin/true`), an open/close loop (read-only opens, filtered in the kernel), and an
//! open-for-write/close loop. Then the highest event rate `tether node` sustained with zero
//! lost events (two writers flat out), and its peak RSS. Prints a markdown table.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::ffi::CString;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Rounds per workload; the fastest round counts. Noise from other load on the machine only
/// ever adds time, so many short rounds estimate each configuration's cost better than a
/// few long ones.
const ROUNDS: usize = 10;
const EXECS: u32 = 300;
const OPENS: u32 = 40_000;
const WRITES: u32 = 20_000;

struct Result3 {
    exec_us: f64,
    open_us: f64,
    write_us: f64,
}

fn exec_loop() -> f64 {
    let t = Instant::now();
    for _ in 0..EXECS {
        let s = Command::new("/bin/true").status().unwrap();
        assert!(s.success());
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(EXECS)
}

fn open_loop(path: &CString, flags: i32, n: u32) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        // SAFETY: a valid NUL-terminated path; the fd is closed at once.
        unsafe {
            let fd = libc::open(path.as_ptr(), flags, 0o644);
            assert!(fd >= 0);
            libc::close(fd);
        }
    }
    t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
}

fn workloads(path: &CString) -> Result3 {
    // best of ROUNDS short rounds each, to damp noise from other load on the machine
    let best = |f: &dyn Fn() -> f64| (0..ROUNDS).map(|_| f()).fold(f64::MAX, f64::min);
    Result3 {
        exec_us: best(&exec_loop),
        open_us: best(&|| open_loop(path, libc::O_RDONLY, OPENS)),
        write_us: best(&|| open_loop(path, libc::O_WRONLY, WRITES)),
    }
}

fn kill(mut c: Child) {
    // SAFETY: signalling our own child.
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end {
        if c.try_wait().unwrap().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = c.kill();
    let _ = c.wait();
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn counters(tether: &str) -> (u64, u64, u64) {
    let out = Command::new(tether)
        .args(["node", "status", "--output", "json"])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    let c = &v["pinned"]["counters"];
    (
        c["emitted"].as_u64().unwrap_or(0),
        c["lost"].as_u64().unwrap_or(0),
        c["filtered"].as_u64().unwrap_or(0),
    )
}

/// A rule that matches write-opens by something other than the path: with it loaded, the
/// prefilter is off and every write-open is reported.
const NO_PREFILTER_RULE: &str = r#"
- rule: Bench write by absent binary
  desc: keeps the write-open prefilter off
  condition: evt.type in (open,openat,openat2) and evt.is_open_write=true and proc.name = tether-no-such
  output: write %fd.name
  priority: DEBUG
  source: syscall
"#;

struct NodeRun {
    result: Result3,
    note: String,
    /// write-opens, seconds, kernel events, lost
    sustained: (u64, f64, u64, u64),
    rss_kb: u64,
}

/// `tether node --all-cgroups --syscall-hook HOOK` with these rule files: the workloads, then
/// two writers flat out for 5 s.
fn tether_run(
    tether: &str,
    hook: &str,
    rules: &[&str],
    dir: &std::path::Path,
    path: &CString,
) -> NodeRun {
    let alerts = dir.join("alerts.jsonl");
    let mut cmd = Command::new(tether);
    cmd.args([
        "node",
        "--all-cgroups",
        "--kube",
        "off",
        "--syscall-hook",
        hook,
    ]);
    for r in rules {
        cmd.args(["--rules", r]);
    }
    let node = cmd
        .arg("--alerts")
        .arg(&alerts)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    let (e0, l0, f0) = counters(tether);
    let r = workloads(path);
    let (e1, l1, f1) = counters(tether);
    let (e2, l2, _) = counters(tether);
    let t = Instant::now();
    let writers: Vec<_> = (0..2)
        .map(|_| {
            let p = path.clone();
            std::thread::spawn(move || {
                let end = Instant::now() + Duration::from_secs(5);
                let mut n = 0u64;
                while Instant::now() < end {
                    open_loop(&p, libc::O_WRONLY, 1000);
                    n += 1000;
                }
                n
            })
        })
        .collect();
    let ops: u64 = writers.into_iter().map(|w| w.join().unwrap()).sum();
    let secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(500));
    let (e3, l3, _) = counters(tether);
    let rss_kb = vm_hwm_kb(node.id());
    kill(node);
    let _ = Command::new(tether).args(["node", "unload"]).output();
    NodeRun {
        result: r,
        note: format!(
            "{} kernel events, {} filtered, {} lost during the loops",
            e1 - e0,
            f1 - f0,
            l1 - l0
        ),
        sustained: (ops, secs, e3 - e2, l3 - l2),
        rss_kb,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let tether = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "target/release/tether".into());
    let rules = args
        .get(2)
        .cloned()
        .unwrap_or_else(|| "../shared/fixtures/falco-rules/falco_rules.yaml".into());
    let dir = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("f");
    std::fs::write(&file, b"x").unwrap();
    let path = CString::new(file.to_string_lossy().as_bytes()).unwrap();
    let _ = Command::new("tether").arg("--version").output();
    let _ = Command::new(&tether).args(["node", "unload"]).output();
    let mut rows: Vec<(String, Result3, String)> = Vec::new();

    let base1 = workloads(&path);
    rows.push(("no tracing".into(), base1, String::new()));

    // tether node, Falco's stable rules, watching host processes too: first with the
    // write-open prefilter off (one extra rule no prefix describes makes every write-open
    // reach user space, as before the prefilter), then with it on
    let no_prefilter = dir.join("no_prefilter.yaml");
    std::fs::write(&no_prefilter, NO_PREFILTER_RULE).unwrap();
    let off = tether_run(
        &tether,
        "auto",
        &[&rules, &no_prefilter.to_string_lossy()],
        &dir,
        &path,
    );
    let off_sustained = (off.sustained, off.rss_kb);
    rows.push((
        "tether node, prefilter off (every write-open to user space; before)".into(),
        off.result,
        off.note,
    ));
    let on = tether_run(&tether, "auto", &[&rules], &dir, &path);
    let on_sustained = (on.sustained, on.rss_kb);
    rows.push((
        "tether node (Falco stable rules, --all-cgroups, prefilter on)".into(),
        on.result,
        on.note,
    ));
    // the same with the raw_tp pair on sys_enter/sys_exit (the capture before per-syscall
    // tracepoints, kept as the fallback)
    let raw = tether_run(&tether, "raw-tp", &[&rules], &dir, &path);
    rows.push((
        "tether node, --syscall-hook raw-tp (prefilter on)".into(),
        raw.result,
        raw.note,
    ));

    // bpftrace printing the same events
    let _ = Command::new("mount")
        .args(["-t", "tracefs", "tracefs", "/sys/kernel/tracing"])
        .output();
    // `args->field`: the syntax bpftrace 0.17 (Debian 12) accepts; a script it refuses must
    // not be measured as if it ran
    let script = "tracepoint:sched:sched_process_exec { printf(\"exec %d %s\\n\", pid, str(args->filename)); } \
                  tracepoint:syscalls:sys_exit_openat /@w[tid]/ { printf(\"open %d %d\\n\", pid, args->ret); delete(@w[tid]); } \
                  tracepoint:syscalls:sys_enter_openat /args->flags & 3/ { @w[tid] = 1; }";
    let bt = Command::new("bpftrace")
        .args(["-e", script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let bt_row = match bt {
        Ok(mut c) => {
            std::thread::sleep(Duration::from_secs(6));
            if let Some(status) = c.try_wait().unwrap() {
                eprintln!("bpftrace exited before the workloads ({status}): its row is left out");
                None
            } else {
                let r = workloads(&path);
                kill(c);
                Some(r)
            }
        }
        Err(e) => {
            eprintln!("bpftrace not run: {e} (install the Debian package `bpftrace`)");
            None
        }
    };
    if let Some(r) = bt_row {
        rows.push(("bpftrace (same events, printed)".into(), r, String::new()));
    }

    // auditd with syscall rules for the same events
    let auditd = Command::new("auditd")
        .arg("-f")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    match auditd {
        Ok(c) => {
            std::thread::sleep(Duration::from_secs(2));
            let add = |a: &[&str]| {
                Command::new("auditctl")
                    .args(a)
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            };
            let ok = add(&[
                "-a",
                "always,exit",
                "-F",
                "arch=b64",
                "-S",
                "execve",
                "-k",
                "tether-bench",
            ]) && add(&[
                "-a",
                "always,exit",
                "-F",
                "arch=b64",
                "-S",
                "openat",
                "-F",
                "a2&3",
                "-k",
                "tether-bench",
            ]);
            let r = workloads(&path);
            let _ = add(&["-D"]);
            kill(c);
            if ok {
                rows.push((
                    "auditd (execve + openat for write)".into(),
                    r,
                    String::new(),
                ));
            } else {
                eprintln!("auditctl refused the rules");
            }
        }
        Err(e) => eprintln!("auditd not run: {e} (install the Debian package `auditd`)"),
    }

    let base2 = workloads(&path);
    rows.push(("no tracing (again, after)".into(), base2, String::new()));

    let base = Result3 {
        exec_us: (rows[0].1.exec_us + rows.last().unwrap().1.exec_us) / 2.0,
        open_us: (rows[0].1.open_us + rows.last().unwrap().1.open_us) / 2.0,
        write_us: (rows[0].1.write_us + rows.last().unwrap().1.write_us) / 2.0,
    };
    let pct = |v: f64, b: f64| (v / b - 1.0) * 100.0;
    println!("| configuration | fork+exec µs/op | overhead | open+close (read-only) µs/op | overhead | open-for-write+close µs/op | overhead | note |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, r, note) in &rows {
        println!(
            "| {name} | {:.1} | {:+.1}% | {:.3} | {:+.1}% | {:.3} | {:+.1}% | {note} |",
            r.exec_us,
            pct(r.exec_us, base.exec_us),
            r.open_us,
            pct(r.open_us, base.open_us),
            r.write_us,
            pct(r.write_us, base.write_us)
        );
    }
    println!();
    for (name, (sustained, rss_kb)) in [
        ("prefilter off", off_sustained),
        ("prefilter on", on_sustained),
    ] {
        let (ops, secs, events, lost) = sustained;
        println!(
            "sustained ({name}): {ops} write-opens in {secs:.1} s by 2 writers -> {events} kernel events, {:.0} events/s, {lost} lost; peak RSS (VmHWM) {} MiB",
            events as f64 / secs,
            rss_kb / 1024
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
