//! The committed `tether policy test` suites under tests/suites/ pass with the real binary:
//! among them Falco's 66 k8s-audit cases, converted, with known differences stated.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

const SUITES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/suites");

fn run(files: &[PathBuf]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["policy", "test"])
        .args(files)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

/// (passed, failed, known, skipped) from the summary line.
fn summary(out: &str) -> [u64; 4] {
    let last = out.lines().last().unwrap();
    let nums: Vec<u64> = last
        .split(", ")
        .map(|p| p.split(' ').next().unwrap().parse().unwrap())
        .collect();
    nums.try_into()
        .unwrap_or_else(|_| panic!("bad summary {last:?}"))
}

#[test]
fn falco_k8s_audit_suite_passes() {
    let suite = Path::new(SUITES).join("falco-k8s-audit/falco_k8s_audit_tests.yaml");
    let (code, out) = run(&[suite]);
    assert_eq!(code, Some(0), "{out}");
    let [passed, failed, known, skipped] = summary(&out);
    assert_eq!(failed, 0, "{out}");
    assert_eq!(skipped, 0, "{out}");
    assert_eq!(passed + known, 66, "{out}");
    // Every known difference states its reason on its report line.
    for line in out.lines().filter(|l| l.starts_with("KNOWN DIFFERENCE ")) {
        let (_, reason) = line.split_once("): ").unwrap();
        assert!(reason.len() > 20, "reason too thin: {line}");
    }
    assert_eq!(
        out.lines()
            .filter(|l| l.starts_with("KNOWN DIFFERENCE "))
            .count() as u64,
        known
    );
}

#[test]
fn every_committed_suite_passes() {
    let mut files = Vec::new();
    let mut dirs = vec![PathBuf::from(SUITES)];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_some_and(|x| x == "yaml") {
                // Rules files live beside the suites; a suite has a top-level `cases:`.
                let text = std::fs::read_to_string(&p).unwrap();
                if text.lines().any(|l| l.starts_with("cases:")) {
                    files.push(p);
                }
            }
        }
    }
    files.sort();
    assert!(files.len() >= 2, "{files:?}");
    assert!(files
        .iter()
        .any(|f| f.ends_with("falco-k8s-audit/falco_k8s_audit_tests.yaml")));
    let (code, out) = run(&files);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(summary(&out)[1], 0, "{out}");
}
