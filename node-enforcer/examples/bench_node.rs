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
//!
//! Paired fork+exec measurement, run alone (nothing else of the above):
//!
//! `cargo run --release -p node-enforcer --example bench_node -- --paired-exec N [--execs M] [TETHER_BIN [RULES_FILE]]`
//!
//! (or `TETHER_BENCH_PAIRED_EXEC=N`, `TETHER_BENCH_PAIRED_EXECS=M` in the environment).
//! N pairs of rounds, each round M fork+exec of `/bin/true` (default 300): A without tracing,
//! B with `tether node --all-cgroups --rules RULES_FILE` started before the round (measured
//! once it logs that its programs are attached, after the same settling pause as A) and
//! stopped and unloaded after it. Pairs alternate their order, A B B A A B B A …, so a drift
//! of the machine that is linear over two pairs cancels. Printed per pair: wall time per
//! exec of A and B and the ratio B/A; the loop's own CPU per exec (the loop thread's
//! `RUSAGE_THREAD` plus `RUSAGE_CHILDREN` of the reaped `/bin/true`s) for A and B; and
//! `tether node`'s CPU per exec (its threads' `/proc/PID/task/*/schedstat` over the loop and
//! a 100 ms drain, less its idle rate measured just before the loop). Then the median
//! overhead with its interquartile range and a bootstrap 95% interval of the median, for the
//! wall time, the loop's CPU, and the loop's plus tether's CPU, and the verdict for the
//! target "fork+exec overhead <= 2%" (wall time): met when the whole interval is at or below
//! 2%, not met when it is all above, otherwise not resolvable by this run.

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

/// Pause after `tether node` is attached (and before every paired round) before measuring:
/// its start-up work and the kernel's after loading or unloading programs are done by then.
const SETTLE: Duration = Duration::from_secs(1);
/// How long `tether node` may take to attach its programs.
const ATTACH_TIMEOUT: Duration = Duration::from_secs(60);
/// The line `tether node` logs once its programs are attached and its reader runs.
const RUNNING_LINE: &str = "tether node running";

/// Starts `tether node --all-cgroups --kube off --syscall-hook HOOK --rules …` with its alerts
/// in `dir`, and returns once it has logged that its programs are attached (its stderr is
/// drained by a thread until it exits). An error names what happened when it exits first or
/// does not attach within `ATTACH_TIMEOUT`.
fn start_node(
    tether: &str,
    hook: &str,
    rules: &[&str],
    dir: &std::path::Path,
) -> Result<Child, String> {
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
    let mut node = cmd
        .arg("--alerts")
        .arg(dir.join("alerts.jsonl"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {tether} node: {e}"))?;
    let stderr = node
        .stderr
        .take()
        .ok_or_else(|| format!("{tether} node: no stderr pipe"))?;
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            // the receiver is gone once attached; keep draining so the pipe never fills
            let _ = tx.send(line);
        }
    });
    let end = Instant::now() + ATTACH_TIMEOUT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(line) if line.contains(RUNNING_LINE) => return Ok(node),
            Ok(line) => seen.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                let status = node.wait().map(|s| s.to_string()).unwrap_or_default();
                return Err(format!(
                    "{tether} node exited ({status}) before attaching:\n{}",
                    seen.join("\n")
                ));
            }
        }
        if Instant::now() > end {
            stop_node(tether, node);
            return Err(format!(
                "{tether} node did not log \"{RUNNING_LINE}\" within {ATTACH_TIMEOUT:?}:\n{}",
                seen.join("\n")
            ));
        }
    }
}

/// Stops `tether node` (SIGINT, then SIGKILL after 10 s) and unloads its pinned programs.
fn stop_node(tether: &str, node: Child) {
    kill(node);
    let _ = Command::new(tether).args(["node", "unload"]).output();
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
    let node = start_node(tether, hook, rules, dir).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    std::thread::sleep(SETTLE);
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
    stop_node(tether, node);
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

/// User plus system CPU time of `who` (`RUSAGE_THREAD`, `RUSAGE_CHILDREN`), in µs.
fn rusage_us(who: libc::c_int) -> f64 {
    // SAFETY: getrusage fills the zeroed struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(who, &mut ru), 0);
        ru
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// On-CPU time of all threads of process `pid` (first field of each
/// `/proc/PID/task/TID/schedstat`), in ns.
fn proc_cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// `n` fork+exec+wait of `/bin/true`: (wall µs per exec, the loop's own CPU µs per exec:
/// this thread plus the reaped children).
fn exec_loop_cpu(n: u32) -> (f64, f64) {
    let (self0, child0) = (
        rusage_us(libc::RUSAGE_THREAD),
        rusage_us(libc::RUSAGE_CHILDREN),
    );
    let t = Instant::now();
    for _ in 0..n {
        let s = Command::new("/bin/true").status().unwrap();
        assert!(s.success());
    }
    let wall = t.elapsed().as_secs_f64() * 1e6;
    let cpu = rusage_us(libc::RUSAGE_THREAD) - self0 + rusage_us(libc::RUSAGE_CHILDREN) - child0;
    (wall / f64::from(n), cpu / f64::from(n))
}

/// One paired round's measurements.
struct PairedRound {
    wall_us: f64,
    cpu_us: f64,
    /// `tether node`'s CPU per exec, idle rate subtracted (B rounds only).
    tether_us: Option<f64>,
    /// kernel records emitted and lost during the round (B rounds only).
    records: Option<(u64, u64)>,
}

/// Of `tether node`'s CPU rate, how long before the loop is measured as idle.
const IDLE_WINDOW: Duration = Duration::from_millis(500);
/// After the loop, how long `tether node`'s reader gets to catch up before its CPU is read.
const DRAIN: Duration = Duration::from_millis(100);

/// A round without tracing: the settling pause, then the loop.
fn paired_round_a(execs: u32) -> PairedRound {
    std::thread::sleep(SETTLE);
    let (wall_us, cpu_us) = exec_loop_cpu(execs);
    PairedRound {
        wall_us,
        cpu_us,
        tether_us: None,
        records: None,
    }
}

/// A round with `tether node` started, attached and settled before the loop, stopped and
/// unloaded after it.
fn paired_round_b(tether: &str, rules: &str, dir: &std::path::Path, execs: u32) -> PairedRound {
    let node = start_node(tether, "auto", &[rules], dir).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(1)
    });
    let pid = node.id();
    let (e0, l0, _) = counters(tether);
    std::thread::sleep(SETTLE.saturating_sub(IDLE_WINDOW));
    let (c0, t0) = (proc_cpu_ns(pid), Instant::now());
    std::thread::sleep(IDLE_WINDOW);
    let (c1, t1) = (proc_cpu_ns(pid), Instant::now());
    let idle_ns_per_s = c1.saturating_sub(c0) as f64 / (t1 - t0).as_secs_f64();
    let (wall_us, cpu_us) = exec_loop_cpu(execs);
    std::thread::sleep(DRAIN);
    let (c2, t2) = (proc_cpu_ns(pid), Instant::now());
    let busy_ns = c2.saturating_sub(c1) as f64 - idle_ns_per_s * (t2 - t1).as_secs_f64();
    // the two `tether node status` calls are traced too: a few records of ~3 per exec
    let (e1, l1, _) = counters(tether);
    stop_node(tether, node);
    PairedRound {
        wall_us,
        cpu_us,
        tether_us: Some(busy_ns / 1e3 / f64::from(execs)),
        records: Some((e1.saturating_sub(e0), l1.saturating_sub(l0))),
    }
}

/// The `q` quantile (0..=1) of sorted values, linearly interpolated.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let pos = q * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Median, interquartile range and a percentile-bootstrap 95% interval of the median
/// (10 000 resamples, fixed seed so a run's numbers can be recomputed).
struct Summary {
    median: f64,
    q1: f64,
    q3: f64,
    ci_lo: f64,
    ci_hi: f64,
}

fn summarize(v: &[f64]) -> Summary {
    let s = sorted(v);
    // xorshift64*: enough for resampling indices
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    let mut medians: Vec<f64> = (0..10_000)
        .map(|_| {
            let sample: Vec<f64> = (0..s.len())
                .map(|_| s[(next() % s.len() as u64) as usize])
                .collect();
            quantile(&sorted(&sample), 0.5)
        })
        .collect();
    medians.sort_by(f64::total_cmp);
    Summary {
        median: quantile(&s, 0.5),
        q1: quantile(&s, 0.25),
        q3: quantile(&s, 0.75),
        ci_lo: quantile(&medians, 0.025),
        ci_hi: quantile(&medians, 0.975),
    }
}

fn print_overhead(what: &str, ratios: &[f64]) -> Summary {
    let pct: Vec<f64> = ratios.iter().map(|r| (r - 1.0) * 100.0).collect();
    let s = summarize(&pct);
    println!(
        "{what}: median {:+.1}%, IQR [{:+.1}%, {:+.1}%], bootstrap 95% interval of the median [{:+.1}%, {:+.1}%]",
        s.median, s.q1, s.q3, s.ci_lo, s.ci_hi
    );
    s
}

/// The paired, interleaved fork+exec measurement (see the top of this file).
fn paired_exec(tether: &str, rules: &str, dir: &std::path::Path, pairs: usize, execs: u32) {
    const TARGET_PCT: f64 = 2.0;
    let _ = Command::new(tether).args(["node", "unload"]).output();
    // one unrecorded round warms the page cache and the allocator
    let _ = exec_loop_cpu(execs);
    let mut rows = Vec::with_capacity(pairs);
    for k in 0..pairs {
        let (a, b) = if k % 2 == 0 {
            let a = paired_round_a(execs);
            (a, paired_round_b(tether, rules, dir, execs))
        } else {
            let b = paired_round_b(tether, rules, dir, execs);
            (paired_round_a(execs), b)
        };
        eprintln!(
            "pair {}/{pairs}: A {:.1} µs, B {:.1} µs, B/A {:.3}",
            k + 1,
            a.wall_us,
            b.wall_us,
            b.wall_us / a.wall_us
        );
        rows.push((if k % 2 == 0 { "AB" } else { "BA" }, a, b));
    }
    println!(
        "paired fork+exec: {pairs} pairs (ABBA), {execs} execs of /bin/true per round; B = {tether} node --all-cgroups --rules {rules}"
    );
    println!();
    println!("| pair | order | A µs/exec | B µs/exec | B/A | A CPU µs/exec | B CPU µs/exec | CPU B/A | tether CPU µs/exec | records/exec | lost |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (k, (order, a, b)) in rows.iter().enumerate() {
        let (records, lost) = b.records.unwrap_or((0, 0));
        println!(
            "| {} | {order} | {:.1} | {:.1} | {:.3} | {:.1} | {:.1} | {:.3} | {:.1} | {:.2} | {lost} |",
            k + 1,
            a.wall_us,
            b.wall_us,
            b.wall_us / a.wall_us,
            a.cpu_us,
            b.cpu_us,
            b.cpu_us / a.cpu_us,
            b.tether_us.unwrap_or(f64::NAN),
            records as f64 / f64::from(execs),
        );
    }
    println!();
    let wall = print_overhead(
        "wall-time overhead (B/A - 1)",
        &rows
            .iter()
            .map(|(_, a, b)| b.wall_us / a.wall_us)
            .collect::<Vec<_>>(),
    );
    print_overhead(
        "loop CPU overhead",
        &rows
            .iter()
            .map(|(_, a, b)| b.cpu_us / a.cpu_us)
            .collect::<Vec<_>>(),
    );
    print_overhead(
        "loop + tether CPU overhead",
        &rows
            .iter()
            .map(|(_, a, b)| (b.cpu_us + b.tether_us.unwrap_or(0.0)) / a.cpu_us)
            .collect::<Vec<_>>(),
    );
    let med = |f: &dyn Fn(&PairedRound, &PairedRound) -> f64| {
        quantile(
            &sorted(&rows.iter().map(|(_, a, b)| f(a, b)).collect::<Vec<_>>()),
            0.5,
        )
    };
    println!(
        "medians per exec: wall A {:.1} µs, B {:.1} µs; loop CPU A {:.1} µs, B {:.1} µs (B - A per pair: {:+.1} µs); tether CPU {:.1} µs",
        med(&|a, _| a.wall_us),
        med(&|_, b| b.wall_us),
        med(&|a, _| a.cpu_us),
        med(&|_, b| b.cpu_us),
        med(&|a, b| b.cpu_us - a.cpu_us),
        med(&|_, b| b.tether_us.unwrap_or(f64::NAN)),
    );
    let lost: u64 = rows
        .iter()
        .filter_map(|(_, _, b)| b.records)
        .map(|r| r.1)
        .sum();
    println!("kernel records lost over all B rounds: {lost}");
    let verdict = if wall.ci_hi <= TARGET_PCT {
        "met"
    } else if wall.ci_lo > TARGET_PCT {
        "not met"
    } else {
        "not resolvable by this run"
    };
    println!(
        "verdict, fork+exec overhead <= {TARGET_PCT}% (wall time, 95% interval [{:+.1}%, {:+.1}%]): {verdict}",
        wall.ci_lo, wall.ci_hi
    );
}

/// `--paired-exec N` / `--execs M` (or `TETHER_BENCH_PAIRED_EXEC` / `TETHER_BENCH_PAIRED_EXECS`)
/// and up to two positional arguments. Exits with a message naming the bad argument.
struct Args {
    paired: Option<usize>,
    execs: u32,
    positional: Vec<String>,
}

fn parse_args() -> Args {
    fn num<T: std::str::FromStr>(what: &str, v: Option<String>) -> T {
        let Some(v) = v else {
            eprintln!("bench_node: {what} needs a number");
            std::process::exit(2)
        };
        match v.parse::<T>() {
            Ok(n) => n,
            Err(_) => {
                eprintln!("bench_node: {what}: \"{v}\" is not a positive whole number");
                std::process::exit(2)
            }
        }
    }
    let mut out = Args {
        paired: std::env::var("TETHER_BENCH_PAIRED_EXEC")
            .ok()
            .map(|v| num("TETHER_BENCH_PAIRED_EXEC", Some(v))),
        execs: std::env::var("TETHER_BENCH_PAIRED_EXECS")
            .ok()
            .map_or(EXECS, |v| num("TETHER_BENCH_PAIRED_EXECS", Some(v))),
        positional: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--paired-exec" => out.paired = Some(num("--paired-exec", it.next())),
            "--execs" => out.execs = num("--execs", it.next()),
            _ if a.starts_with("--") => {
                eprintln!("bench_node: unknown option {a} (known: --paired-exec N, --execs M)");
                std::process::exit(2)
            }
            _ => out.positional.push(a),
        }
    }
    if out.paired.is_none() && out.execs != EXECS {
        eprintln!("bench_node: --execs applies to --paired-exec only");
        std::process::exit(2)
    }
    if out.paired == Some(0) || out.execs == 0 {
        eprintln!("bench_node: --paired-exec and --execs must be at least 1");
        std::process::exit(2)
    }
    if out.positional.len() > 2 {
        eprintln!(
            "bench_node: unexpected argument {} (usage: [--paired-exec N [--execs M]] [TETHER_BIN [RULES_FILE]])",
            out.positional[2]
        );
        std::process::exit(2)
    }
    out
}

fn main() {
    let args = parse_args();
    let tether = args
        .positional
        .first()
        .cloned()
        .unwrap_or_else(|| "target/release/tether".into());
    let rules = args
        .positional
        .get(1)
        .cloned()
        .unwrap_or_else(|| "../shared/fixtures/falco-rules/falco_rules.yaml".into());
    let dir = std::env::temp_dir().join(format!("tether-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    if let Some(pairs) = args.paired {
        paired_exec(&tether, &rules, &dir, pairs, args.execs);
        let _ = std::fs::remove_dir_all(&dir);
        return;
    }
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
