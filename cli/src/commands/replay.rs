//! `tether replay`: evaluate recorded audit events and AdmissionReviews against rules.
//!
//! Alerts go to stdout, one Falco-compatible JSON object per line; the summary (events read,
//! alerts per rule, rejected inputs with file and line) goes to stderr.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use policies::{Alert, RuleSet};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Rules file; repeat (or separate with commas) for several, loaded together in order.
    /// Without it, the bundled rule library is used.
    #[arg(
        long = "rules",
        short = 'r',
        value_name = "FILE",
        value_delimiter = ','
    )]
    rules: Vec<PathBuf>,
    /// Stop at the first malformed input and exit 1 (default: report it, skip it, go on).
    #[arg(long)]
    strict: bool,
    /// Inputs: audit Event, EventList, JSON lines or JSON arrays, and AdmissionReviews;
    /// `-` reads stdin.
    #[arg(required = true, value_name = "INPUT")]
    inputs: Vec<String>,
}

/// What a replay saw, printed to stderr at the end.
#[derive(Debug, Default)]
struct Summary {
    inputs: usize,
    events: u64,
    alerts: BTreeMap<String, u64>,
    rejected: Vec<String>,
}

impl Summary {
    fn print(&self, aborted: bool) {
        let alerts: u64 = self.alerts.values().sum();
        eprintln!(
            "replay: {} event(s) read from {} input(s), {alerts} alert(s), {} input(s) rejected{}",
            self.events,
            self.inputs,
            self.rejected.len(),
            if aborted { " (aborted: --strict)" } else { "" }
        );
        if !self.alerts.is_empty() {
            eprintln!("alerts per rule:");
            for (rule, n) in &self.alerts {
                eprintln!("  {n:>6}  {rule}");
            }
        }
        if !self.rejected.is_empty() {
            eprintln!("rejected:");
            for r in &self.rejected {
                eprintln!("  {r}");
            }
        }
    }
}

pub fn run(args: ReplayArgs) -> ExitCode {
    let rules = if args.rules.is_empty() {
        RuleSet::bundled_library()
    } else {
        match RuleSet::load(&args.rules) {
            Ok(r) => r,
            Err(errors) => {
                for line in super::load_error_lines(&errors) {
                    eprintln!("{line}");
                }
                eprintln!("replay: the rules do not load");
                return ExitCode::FAILURE;
            }
        }
    };
    for w in rules.warnings() {
        tracing::warn!(warning = %w, "rules loaded with a warning");
    }
    let hostname = hostname::get()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".to_string());

    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut sum = Summary::default();
    let mut aborted = false;
    'inputs: for input in &args.inputs {
        sum.inputs += 1;
        let (name, bytes) = match read_input(input) {
            Ok(v) => v,
            Err(e) => {
                sum.rejected.push(e);
                if args.strict {
                    aborted = true;
                    break;
                }
                continue;
            }
        };
        for parsed in policies::input::parse_document(&name, &bytes) {
            let event = match parsed {
                Ok(ev) => ev,
                Err(e) => {
                    sum.rejected.push(e.to_string());
                    if args.strict {
                        aborted = true;
                        break 'inputs;
                    }
                    continue;
                }
            };
            sum.events += 1;
            for m in rules.evaluate(&event) {
                *sum.alerts.entry(m.rule.name.clone()).or_default() += 1;
                let alert = Alert::from_match(&m, &event, &hostname);
                let written = serde_json::to_writer(&mut out, &alert)
                    .map_err(std::io::Error::from)
                    .and_then(|()| out.write_all(b"\n"));
                if let Err(e) = written {
                    if e.kind() != std::io::ErrorKind::BrokenPipe {
                        eprintln!("replay: cannot write alert: {e}");
                    }
                    return ExitCode::FAILURE;
                }
            }
        }
    }
    if let Err(e) = out.flush() {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("replay: cannot write alerts: {e}");
        }
        return ExitCode::FAILURE;
    }
    sum.print(aborted);
    if aborted {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Reads one input: a file, or stdin for `-`. The name is what rejections cite.
fn read_input(input: &str) -> Result<(String, Vec<u8>), String> {
    if input == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut buf)
            .map_err(|e| format!("<stdin>: cannot read: {e}"))?;
        Ok(("<stdin>".to_string(), buf))
    } else {
        std::fs::read(input)
            .map(|b| (input.to_string(), b))
            .map_err(|e| format!("{input}: cannot read: {e}"))
    }
}
