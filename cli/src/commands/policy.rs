//! `tether policy`: the rule author's tools — `lint`, `fields`, `test`.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use policies::{RuleSet, Source};

use super::suite;

#[derive(Debug, Args)]
pub struct PolicyArgs {
    #[command(subcommand)]
    command: PolicyCommand,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Load and compile rules files together, in the given order (as Falco does).
    /// Exit 0 when they do; else exit 1 with one `FILE:LINE:COL: rule "NAME": problem` line each.
    Lint {
        /// Rules files, loaded together in this order.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
    /// List the fields rules can read (name, type, description), grouped by source.
    Fields {
        /// Only the fields this source provides: syscall, k8s_audit or k8s_admission.
        #[arg(long, value_name = "S")]
        source: Option<Source>,
    },
    /// Run YAML test suites: rules files, inputs, expected hits and admission decisions.
    /// Exit 1 when any case fails.
    Test {
        /// Suite files.
        #[arg(required = true, value_name = "FILE")]
        files: Vec<PathBuf>,
    },
}

pub fn run(args: PolicyArgs) -> ExitCode {
    let res = match args.command {
        PolicyCommand::Lint { files } => lint(&files),
        PolicyCommand::Fields { source } => fields(source),
        PolicyCommand::Test { files } => test(&files),
    };
    res.unwrap_or_else(|e| {
        // Writing to a closed stdout (e.g. `| head`) is not worth a message.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("tether policy: cannot write output: {e}");
        }
        ExitCode::FAILURE
    })
}

fn lint(files: &[PathBuf]) -> std::io::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    match RuleSet::load(files) {
        Ok(set) => {
            for w in set.warnings() {
                eprintln!("{w}");
            }
            eprintln!(
                "ok: {} file(s), {} rule(s), {} warning(s)",
                files.len(),
                set.rules().len(),
                set.warnings().len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            let lines = super::load_error_lines(&errors);
            for line in &lines {
                writeln!(out, "{line}")?;
            }
            out.flush()?;
            eprintln!("{} problem(s) in {} file(s)", lines.len(), files.len());
            Ok(ExitCode::FAILURE)
        }
    }
}

fn fields(only: Option<Source>) -> std::io::Result<ExitCode> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let sources: Vec<Source> = match only {
        Some(s) => vec![s],
        None => Source::ALL.to_vec(),
    };
    for (i, source) in sources.into_iter().enumerate() {
        let fields: Vec<_> = policies::fields::registry()
            .iter()
            .filter(|f| f.sources.contains(&source))
            .collect();
        if i > 0 {
            writeln!(out)?;
        }
        writeln!(out, "Source: {source} ({} fields)", fields.len())?;
        writeln!(out, "{}", "-".repeat(72))?;
        let rows: Vec<(String, String, String)> = fields.iter().map(|f| field_row(f)).collect();
        let width = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(24);
        let twidth = rows.iter().map(|r| r.1.len()).max().unwrap_or(0);
        for (name, ty, description) in rows {
            writeln!(out, "{name:<width$}  {ty:<twidth$}  {description}")?;
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// (name with its argument form, type, description) of one field, as `policy fields` prints it.
fn field_row(f: &policies::fields::FieldDef) -> (String, String, String) {
    use policies::fields::ArgKind;
    let arg = match f.arg {
        ArgKind::None => "",
        ArgKind::Index => "[N]",
        ArgKind::Key => "[KEY]",
        ArgKind::JsonPointer => "[/POINTER]",
        ArgKind::JsonPath => "[$.PATH]",
    };
    let name = if arg.is_empty() || f.arg_required {
        format!("{}{arg}", f.name)
    } else {
        // An optional argument is shown in parentheses.
        format!("{}({arg})", f.name)
    };
    let ty = serde_json::to_value(f.ftype)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", f.ftype).to_lowercase());
    let ty = if f.list { format!("list<{ty}>") } else { ty };
    let mut description = f.description.to_string();
    if !f.produced {
        description.push_str(" (accepted in rules; not produced by Tether: always missing)");
    }
    (name, ty, description)
}

fn test(files: &[PathBuf]) -> std::io::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    let mut cache = suite::RuleSetCache::default();
    let mut total = suite::Summary::default();
    for file in files {
        match suite::load_suite(file) {
            Ok(s) => {
                let sum = suite::run_suite(&s, &mut cache, &mut out)?;
                total.passed += sum.passed;
                total.failed += sum.failed;
                total.known += sum.known;
                total.skipped += sum.skipped;
            }
            Err(e) => {
                writeln!(out, "ERROR {e}")?;
                total.failed += 1;
            }
        }
    }
    writeln!(out, "{total}")?;
    out.flush()?;
    Ok(if total.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
