//! `tether rollout report`: what enforcement did and would have done, per rule, so that an
//! operator can switch a rule from `detect` to `enforce` with evidence.
//!
//! Reads the webhook's decision log (one `AdmissionDecision` JSON line per review) and alert
//! JSON lines (Falco's shape with Tether's `mode` and `actions`, from `tether node`, `tether
//! audit-bridge` or `tether replay`), in any mix, and counts per rule over a time window:
//!
//! - `matched`: reviews or events the rule matched;
//! - `enforced`: admission denials it caused, and actions carried out (not dry-run);
//! - `would enforce`: matches where it ran in detect mode (configured `detect`, or the
//!   global detect-only switch) — each one a request that enforcement would have denied —
//!   and dry-run actions; matches outside the rule's enforcement scope are counted apart
//!   (enforcing the rule as scoped would not deny those);
//! - where and by whom: the namespaces and users involved, most frequent first.
//!
//! A line that is neither shape is reported with its file and line number and skipped
//! (`--strict` stops at it instead).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::process::ExitCode;

use clap::{Args, Subcommand, ValueEnum};
use engine::AdmissionDecision;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The parts of an alert the report reads: Falco's own alerts (no `mode`, no `actions`)
/// are read as well as Tether's.
#[derive(Debug, Deserialize)]
struct AlertLine {
    rule: String,
    time: String,
    #[serde(default)]
    source: String,
    #[serde(default)]
    output_fields: Map<String, Value>,
    #[serde(default)]
    mode: Option<String>,
    #[serde(default)]
    actions: Vec<ActionLine>,
    #[serde(default)]
    session: Option<SessionLine>,
}

#[derive(Debug, Deserialize)]
struct ActionLine {
    kind: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    status: String,
}

#[derive(Debug, Deserialize)]
struct SessionLine {
    #[serde(default)]
    user: String,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    command: RolloutCommand,
}

#[derive(Debug, Subcommand)]
enum RolloutCommand {
    /// Per rule: matches, what was enforced, and what enforcement would have done.
    Report(ReportArgs),
}

#[derive(Debug, Args)]
struct ReportArgs {
    /// Only records newer than this (e.g. `90m`, `24h`, `7d`), counted back from now.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    since: Option<std::time::Duration>,
    /// Only these rules (repeatable).
    #[arg(long = "rule", value_name = "NAME")]
    rules: Vec<String>,
    /// How many namespaces and users to list per rule.
    #[arg(long, default_value_t = 3)]
    top: usize,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    output: Output,
    /// Stop at the first line that is neither a decision record nor an alert, and exit 1.
    #[arg(long)]
    strict: bool,
    /// Decision logs (`tether webhook --decision-log`) and alert JSON lines; `-` is stdin.
    #[arg(required = true, value_name = "FILE")]
    inputs: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Output {
    Text,
    Json,
}

pub fn run(args: RolloutArgs) -> ExitCode {
    match args.command {
        RolloutCommand::Report(a) => report(&a),
    }
}

/// `90s`, `15m`, `24h`, `7d`.
fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("\"{s}\": give a unit: s, m, h or d (e.g. 24h)"))?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("\"{s}\": expected a number followed by s, m, h or d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        other => {
            return Err(format!(
                "\"{s}\": unknown unit \"{other}\" (use s, m, h or d)"
            ))
        }
    };
    Ok(std::time::Duration::from_secs(secs))
}

/// One rule's line in the report.
#[derive(Debug, Default, Serialize, PartialEq)]
struct RuleReport {
    rule: String,
    /// Modes the rule ran in (`enforce`, `detect`), with counts.
    modes: BTreeMap<String, u64>,
    matched: u64,
    /// Admission requests denied because of this rule.
    denied: u64,
    /// Admission requests this rule matched in detect mode (its mode, or the global
    /// detect-only switch): enforcing it would have denied them.
    would_deny: u64,
    /// Admission requests it matched outside its enforcement scope: enforcing it as scoped
    /// would not have denied them either.
    out_of_scope: u64,
    /// Actions carried out, by kind (and `failed` ones counted apart).
    actions: BTreeMap<String, u64>,
    actions_failed: u64,
    /// Actions not needed in enforce mode (already done by an earlier match or another rule).
    actions_skipped: u64,
    /// Actions recorded as dry-run (detect mode or out of scope), by kind.
    would_actions: BTreeMap<String, u64>,
    namespaces: BTreeMap<String, u64>,
    users: BTreeMap<String, u64>,
    sources: BTreeMap<String, u64>,
    first_ns: i64,
    last_ns: i64,
}

impl RuleReport {
    fn seen(&mut self, time_ns: i64) {
        if self.first_ns == 0 || time_ns < self.first_ns {
            self.first_ns = time_ns;
        }
        self.last_ns = self.last_ns.max(time_ns);
    }
}

#[derive(Debug, Default)]
struct Report {
    decisions: u64,
    alerts: u64,
    skipped_old: u64,
    rejected: Vec<String>,
    rules: BTreeMap<String, RuleReport>,
}

fn bump(map: &mut BTreeMap<String, u64>, key: &str) {
    *map.entry(key.to_string()).or_default() += 1;
}

impl Report {
    fn rule(&mut self, name: &str) -> &mut RuleReport {
        self.rules
            .entry(name.to_string())
            .or_insert_with(|| RuleReport {
                rule: name.to_string(),
                ..RuleReport::default()
            })
    }

    fn decision(&mut self, d: &AdmissionDecision, keep: &dyn Fn(&str) -> bool) {
        self.decisions += 1;
        let denied = d.outcome == engine::DecisionOutcome::Deny;
        for v in &d.rules {
            if !keep(&v.rule) {
                continue;
            }
            let r = self.rule(&v.rule);
            r.matched += 1;
            r.seen(d.time_ns);
            bump(&mut r.modes, &v.mode);
            bump(&mut r.sources, "k8s_admission");
            let outside = v
                .reason
                .as_deref()
                .is_some_and(|why| why.starts_with(webhook::decide::OUTSIDE_SCOPE));
            if v.mode == "enforce" && denied {
                r.denied += 1;
            } else if outside {
                r.out_of_scope += 1;
            } else if v.mode == "detect" {
                r.would_deny += 1;
            }
            bump(
                &mut r.namespaces,
                d.namespace.as_deref().unwrap_or("(cluster)"),
            );
            bump(&mut r.users, &d.user);
        }
    }

    fn alert(&mut self, a: &AlertLine, time_ns: i64, keep: &dyn Fn(&str) -> bool) {
        self.alerts += 1;
        if !keep(&a.rule) {
            return;
        }
        let r = self.rule(&a.rule);
        r.matched += 1;
        r.seen(time_ns);
        // Falco's own alerts have no mode: they only detect.
        bump(&mut r.modes, a.mode.as_deref().unwrap_or("detect"));
        bump(
            &mut r.sources,
            if a.source.is_empty() {
                "unknown"
            } else {
                &a.source
            },
        );
        for action in &a.actions {
            if action.dry_run {
                bump(&mut r.would_actions, &action.kind);
            } else if action.status == "failed" {
                r.actions_failed += 1;
            } else if action.status == "skipped" {
                // e.g. already isolated, already killed at exec by another rule
                r.actions_skipped += 1;
            } else {
                bump(&mut r.actions, &action.kind);
            }
        }
        let field = |names: &[&str]| {
            names.iter().find_map(|n| {
                a.output_fields
                    .get(*n)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty() && *s != "<NA>")
                    .map(str::to_string)
            })
        };
        if let Some(ns) = field(&["k8s.ns.name", "ka.target.namespace"]) {
            bump(&mut r.namespaces, &ns);
        }
        let user = a
            .session
            .as_ref()
            .map(|s| s.user.clone())
            .filter(|u| !u.is_empty())
            .or_else(|| field(&["ka.user.name", "user.name"]));
        if let Some(u) = user {
            bump(&mut r.users, &u);
        }
    }
}

fn rfc3339_ns(s: &str) -> Option<i64> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(t.unix_timestamp_nanos()).ok()
}

fn format_ns(ns: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| {
            t.replace_nanosecond(0)
                .ok()?
                .format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "-".to_string())
}

fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What one line is.
#[derive(Debug)]
enum Line {
    Decision(Box<AdmissionDecision>),
    Alert(Box<AlertLine>, i64),
}

fn classify(text: &str) -> Result<Line, String> {
    let v: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Some(obj) = v.as_object() else {
        return Err("not a JSON object".to_string());
    };
    if obj.contains_key("request_uid") && obj.contains_key("would_outcome") {
        let d: AdmissionDecision =
            serde_json::from_value(v).map_err(|e| format!("decision record: {e}"))?;
        return Ok(Line::Decision(Box::new(d)));
    }
    if obj.contains_key("rule") && obj.contains_key("output") && obj.contains_key("time") {
        let a: AlertLine = serde_json::from_value(v).map_err(|e| format!("alert: {e}"))?;
        let ns = rfc3339_ns(&a.time)
            .ok_or_else(|| format!("alert: \"time\" is not RFC 3339: {:?}", a.time))?;
        return Ok(Line::Alert(Box::new(a), ns));
    }
    Err("neither a decision record (request_uid, would_outcome, ...) nor an alert (rule, output, time, ...)".to_string())
}

fn read_input(
    name: &str,
    report: &mut Report,
    args: &ReportArgs,
    cutoff_ns: i64,
) -> Result<(), String> {
    let reader: Box<dyn BufRead> = if name == "-" {
        Box::new(BufReader::new(std::io::stdin()))
    } else {
        Box::new(BufReader::new(
            std::fs::File::open(name).map_err(|e| format!("{name}: {e}"))?,
        ))
    };
    let keep = |rule: &str| args.rules.is_empty() || args.rules.iter().any(|r| r == rule);
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| format!("{name}:{}: {e}", i + 1))?;
        if line.trim().is_empty() {
            continue;
        }
        match classify(&line) {
            Ok(Line::Decision(d)) if d.time_ns < cutoff_ns => report.skipped_old += 1,
            Ok(Line::Decision(d)) => report.decision(&d, &keep),
            Ok(Line::Alert(_, ns)) if ns < cutoff_ns => report.skipped_old += 1,
            Ok(Line::Alert(a, ns)) => report.alert(&a, ns, &keep),
            Err(why) => {
                let msg = format!("{name}:{}: {why}", i + 1);
                if args.strict {
                    return Err(msg);
                }
                report.rejected.push(msg);
            }
        }
    }
    Ok(())
}

fn top(map: &BTreeMap<String, u64>, n: usize) -> Vec<(String, u64)> {
    let mut v: Vec<(String, u64)> = map.iter().map(|(k, c)| (k.clone(), *c)).collect();
    v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    v.truncate(n);
    v
}

fn counts(map: &BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "-".to_string();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn listed(v: &[(String, u64)]) -> String {
    if v.is_empty() {
        return "-".to_string();
    }
    v.iter()
        .map(|(k, n)| format!("{k} ({n})"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn write_text(out: &mut dyn Write, r: &Report, args: &ReportArgs) -> std::io::Result<()> {
    writeln!(
        out,
        "rollout report: {} admission decision(s), {} alert(s){}",
        r.decisions,
        r.alerts,
        match args.since {
            Some(d) => format!(
                " in the last {}s ({} older record(s) left out)",
                d.as_secs(),
                r.skipped_old
            ),
            None => String::new(),
        }
    )?;
    if r.rules.is_empty() {
        writeln!(out, "no rule matched")?;
        return Ok(());
    }
    let mut rules: Vec<&RuleReport> = r.rules.values().collect();
    rules.sort_by(|a, b| {
        (b.would_deny + b.would_actions.values().sum::<u64>())
            .cmp(&(a.would_deny + a.would_actions.values().sum::<u64>()))
            .then_with(|| b.matched.cmp(&a.matched))
            .then_with(|| a.rule.cmp(&b.rule))
    });
    for rr in rules {
        writeln!(out)?;
        writeln!(out, "{}", rr.rule)?;
        writeln!(
            out,
            "  matched {} ({}), from {} to {}; ran as: {}",
            rr.matched,
            counts(&rr.sources),
            format_ns(rr.first_ns),
            format_ns(rr.last_ns),
            counts(&rr.modes)
        )?;
        if rr.denied + rr.would_deny + rr.out_of_scope > 0 {
            writeln!(
                out,
                "  admission: denied {}, would have denied {} more in enforce mode, {} outside its enforcement scope",
                rr.denied, rr.would_deny, rr.out_of_scope
            )?;
        }
        if !rr.actions.is_empty()
            || !rr.would_actions.is_empty()
            || rr.actions_failed + rr.actions_skipped > 0
        {
            writeln!(
                out,
                "  actions: done {}; failed {}; not needed {}; would have done (dry-run) {}",
                counts(&rr.actions),
                rr.actions_failed,
                rr.actions_skipped,
                counts(&rr.would_actions)
            )?;
        }
        writeln!(
            out,
            "  namespaces: {}",
            listed(&top(&rr.namespaces, args.top))
        )?;
        writeln!(out, "  users: {}", listed(&top(&rr.users, args.top)))?;
    }
    Ok(())
}

fn report(args: &ReportArgs) -> ExitCode {
    let cutoff_ns = match args.since {
        Some(d) => now_ns().saturating_sub(i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)),
        None => i64::MIN,
    };
    let mut r = Report::default();
    for input in &args.inputs {
        if let Err(e) = read_input(input, &mut r, args, cutoff_ns) {
            eprintln!("tether rollout report: {e}");
            return ExitCode::FAILURE;
        }
    }
    for msg in r.rejected.iter().take(20) {
        eprintln!("tether rollout report: skipped {msg}");
    }
    if r.rejected.len() > 20 {
        eprintln!(
            "tether rollout report: ... and {} more line(s) skipped",
            r.rejected.len() - 20
        );
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let written = match args.output {
        Output::Text => write_text(&mut out, &r, args),
        Output::Json => {
            let rules: Vec<&RuleReport> = r.rules.values().collect();
            let doc = serde_json::json!({
                "decisions": r.decisions,
                "alerts": r.alerts,
                "left_out_older": r.skipped_old,
                "skipped_lines": r.rejected.len(),
                "rules": rules,
            });
            serde_json::to_writer_pretty(&mut out, &doc)
                .and_then(|()| writeln!(out).map_err(serde_json::Error::io))
                .map_err(std::io::Error::other)
        }
    };
    if let Err(e) = written {
        eprintln!("tether rollout report: cannot write the report: {e}");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_say_what_is_wrong() {
        assert_eq!(parse_duration("90s").unwrap().as_secs(), 90);
        assert_eq!(parse_duration("15m").unwrap().as_secs(), 900);
        assert_eq!(parse_duration("24h").unwrap().as_secs(), 86_400);
        assert_eq!(parse_duration("7d").unwrap().as_secs(), 604_800);
        assert!(parse_duration("24").unwrap_err().contains("give a unit"));
        assert!(parse_duration("3w")
            .unwrap_err()
            .contains("unknown unit \"w\""));
        assert!(parse_duration("h")
            .unwrap_err()
            .contains("expected a number"));
    }

    #[test]
    fn lines_are_classified_or_rejected_with_the_reason() {
        assert!(classify("{").unwrap_err().starts_with("not JSON"));
        assert!(classify("[1]").unwrap_err().contains("not a JSON object"));
        assert!(classify(r#"{"a":1}"#).unwrap_err().contains("neither"));
        let bad_time = r#"{"rule":"r","output":"o","time":"yesterday","priority":"Warning"}"#;
        assert!(classify(bad_time).unwrap_err().contains("not RFC 3339"));
        let bad_decision = r#"{"request_uid":"u","would_outcome":"maybe"}"#;
        assert!(classify(bad_decision)
            .unwrap_err()
            .starts_with("decision record:"));
    }
}
