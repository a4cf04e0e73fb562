//! Audit events per second through parse + every k8s_audit rule, on one core, next to a raw
//! `serde_json` parse of the same corpus in the same run.
//!
//! ```text
//! cargo run --release -p tether-bench --bin audit-rules -- [--events N] [--rounds R] [--rules FILE]... [--only raw|rules] [--metadata-level]
//! ```
//!
//! Defaults: 300000 events, 5 rounds, the plugin's `k8s_audit_rules.yaml`. Each round runs the
//! raw parse and the full path over the whole corpus, one after the other on this thread; the
//! best round of each is reported (the least disturbed by the rest of the machine).

use std::hint::black_box;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use policies::{parse_document, RuleSet, Source};
use tether_bench::{build_corpus, fixtures_dir, Corpus};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Only {
    Both,
    Raw,
    Rules,
}

struct Opts {
    events: usize,
    rounds: usize,
    rules: Vec<PathBuf>,
    /// Run one path only (for profiling it, e.g. under `perf record`).
    only: Only,
    /// Cut every event to what the `Metadata` audit level records (no request/response bodies).
    metadata: bool,
}

fn parse_opts() -> Result<Opts, String> {
    let mut o = Opts {
        events: 300_000,
        rounds: 5,
        rules: Vec::new(),
        only: Only::Both,
        metadata: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        match a.as_str() {
            "--events" => {
                o.events = value("--events")?
                    .parse()
                    .map_err(|e| format!("--events: {e}"))?
            }
            "--rounds" => {
                o.rounds = value("--rounds")?
                    .parse()
                    .map_err(|e| format!("--rounds: {e}"))?
            }
            "--rules" => o.rules.push(PathBuf::from(value("--rules")?)),
            "--metadata-level" => o.metadata = true,
            "--only" => {
                o.only = match value("--only")?.as_str() {
                    "raw" => Only::Raw,
                    "rules" => Only::Rules,
                    other => return Err(format!("--only: expected raw or rules, found {other:?}")),
                }
            }
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if o.events == 0 || o.rounds == 0 {
        return Err("--events and --rounds must be positive".into());
    }
    if o.rules.is_empty() {
        o.rules
            .push(fixtures_dir().join("falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml"));
    }
    Ok(o)
}

/// Raw parse: every line into a `serde_json::Value`.
fn raw_parse(c: &Corpus) -> Result<(Duration, usize), String> {
    let start = Instant::now();
    let mut keys = 0usize;
    for (i, line) in c.lines().enumerate() {
        let v: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("corpus line {}: {e}", i + 1))?;
        keys += v.as_object().map_or(0, |o| o.len());
        black_box(&v);
    }
    Ok((start.elapsed(), keys))
}

/// The full path as the audit bridge runs it on bytes: `policies::parse_document` (which reads
/// the top level of each event and parses a value only when a rule reads it), then every rule.
fn parse_and_evaluate(c: &Corpus, rules: &RuleSet) -> Result<(Duration, usize), String> {
    let start = Instant::now();
    let mut alerts = 0usize;
    for (i, line) in c.lines().enumerate() {
        for parsed in parse_document("corpus", line) {
            let ev = parsed.map_err(|e| format!("corpus line {}: {}", i + 1, e.what))?;
            let matches = rules.evaluate(&ev);
            alerts += matches.len();
            black_box(&matches);
        }
    }
    Ok((start.elapsed(), alerts))
}

fn rate(n: usize, d: Duration) -> f64 {
    n as f64 / d.as_secs_f64().max(1e-9)
}

fn run() -> Result<(), String> {
    let o = parse_opts()?;
    let rules = RuleSet::load(&o.rules).map_err(|e| {
        let mut s = String::from("the rules do not load:");
        for line in e.iter() {
            s.push_str(&format!("\n  {line}"));
        }
        s
    })?;
    let k8s_rules = rules
        .rules()
        .iter()
        .filter(|r| r.source == Source::K8sAudit)
        .count();
    let corpus = build_corpus(&fixtures_dir(), o.events, o.metadata).map_err(|e| e.to_string())?;
    let mb = corpus.bytes.len() as f64 / 1e6;
    println!(
        "corpus: {} events ({} distinct, from {} files{}), {:.1} MB",
        corpus.len(),
        corpus.distinct,
        corpus.files.len(),
        if o.metadata {
            ", cut to Metadata level"
        } else {
            ""
        },
        mb
    );
    println!(
        "rules: {} ({} k8s_audit rules loaded)",
        o.rules
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        k8s_rules
    );
    let mut best_raw = Duration::MAX;
    let mut best_full = Duration::MAX;
    let mut alerts = 0;
    for round in 1..=o.rounds {
        let mut line = format!("round {round}:");
        if o.only != Only::Rules {
            let (raw, _) = raw_parse(&corpus)?;
            best_raw = best_raw.min(raw);
            line.push_str(&format!(
                " raw parse {:>10.0} events/s",
                rate(corpus.len(), raw)
            ));
        }
        if o.only != Only::Raw {
            let (full, a) = parse_and_evaluate(&corpus, &rules)?;
            alerts = a;
            best_full = best_full.min(full);
            line.push_str(&format!(
                "   parse + rules {:>10.0} events/s",
                rate(corpus.len(), full)
            ));
        }
        println!("{line}");
    }
    println!("best of {} rounds, one thread:", o.rounds);
    if o.only != Only::Rules {
        println!(
            "  raw serde_json parse:      {:>10.0} events/s  ({:.0} MB/s)",
            rate(corpus.len(), best_raw),
            mb / best_raw.as_secs_f64()
        );
    }
    if o.only != Only::Raw {
        println!(
            "  parse + k8s_audit rules:   {:>10.0} events/s  ({:.0} MB/s, {alerts} alerts per pass)",
            rate(corpus.len(), best_full),
            mb / best_full.as_secs_f64()
        );
    }
    if o.only == Only::Both {
        let raw_rate = rate(corpus.len(), best_raw);
        let full_rate = rate(corpus.len(), best_full);
        println!(
            "  ratio (rules / raw):       {:>10.2}",
            full_rate / raw_rate
        );
        println!(
            "  targets: >= 300000 events/s: {}; ratio >= 0.5: {}",
            if full_rate >= 300_000.0 {
                "met"
            } else {
                "missed"
            },
            if full_rate / raw_rate >= 0.5 {
                "met"
            } else {
                "missed"
            }
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("audit-rules: {e}");
            ExitCode::FAILURE
        }
    }
}
