//! End-to-end contract of `tether policy fields`: the field registry, grouped by source.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Output};

fn fields(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["policy", "fields"])
        .args(args)
        .output()
        .unwrap()
}

/// (name, type, description) of each field line under the header of `source`.
fn section(stdout: &str, source: &str) -> Vec<(String, String, String)> {
    let header = format!("Source: {source} (");
    let mut lines = stdout.lines().skip_while(|l| !l.starts_with(&header));
    assert!(
        lines.next().is_some(),
        "no section for {source} in\n{stdout}"
    );
    lines
        .skip(1) // the rule under the header
        .take_while(|l| !l.is_empty())
        .map(|l| {
            let mut it = l.split_whitespace();
            // `ka.uri.param[KEY]`, `proc.aname([N])`: keep the name only.
            let name = it.next().unwrap();
            let name = name.split(['[', '(']).next().unwrap().to_string();
            let ty = it
                .next()
                .unwrap_or_else(|| panic!("no type in {l:?}"))
                .to_string();
            let desc = it.collect::<Vec<_>>().join(" ");
            (name, ty, desc)
        })
        .collect()
}

#[test]
fn every_source_is_listed_with_its_fields() {
    let out = fields(&[]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    let audit = section(&stdout, "k8s_audit");
    let syscall = section(&stdout, "syscall");
    let admission = section(&stdout, "k8s_admission");
    for want in [
        "ka.user.name",
        "ka.verb",
        "ka.target.resource",
        "ka.uri.param",
        "jevt.value",
    ] {
        assert!(audit.iter().any(|f| f.0 == want), "k8s_audit lacks {want}");
        assert!(
            admission.iter().any(|f| f.0 == want),
            "k8s_admission lacks {want}"
        );
    }
    for want in [
        "proc.name",
        "proc.cmdline",
        "fd.name",
        "container.id",
        "session.user",
    ] {
        assert!(syscall.iter().any(|f| f.0 == want), "syscall lacks {want}");
    }
    assert!(!syscall.iter().any(|f| f.0.starts_with("ka.")));
    assert!(!audit.iter().any(|f| f.0.starts_with("proc.")));
    for (name, ty, desc) in audit.iter().chain(&syscall).chain(&admission) {
        assert!(
            !ty.is_empty() && !desc.is_empty(),
            "{name} lacks a type or description"
        );
    }
}

#[test]
fn source_filter_lists_one_source() {
    let out = fields(&["--source", "k8s_audit"]);
    assert!(out.status.success());
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert_eq!(stdout.matches("Source: ").count(), 1, "{stdout}");
    assert!(section(&stdout, "k8s_audit")
        .iter()
        .any(|f| f.0 == "ka.auditid"));
}

#[test]
fn unknown_source_is_a_usage_error() {
    let out = fields(&["--source", "aws_cloudtrail"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("aws_cloudtrail"), "{err}");
}
