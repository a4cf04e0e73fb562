//! End-to-end contract of `tether policy test`: pass/fail per case, the summary line, exit
//! codes, known differences and skips that are printed with their reason, and suite-file
//! errors with file and line.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

fn fixture(rel: &str) -> String {
    let p = PathBuf::from(FIXTURES).join(rel);
    assert!(p.is_file(), "missing fixture {}", p.display());
    p.display().to_string()
}

fn suite_file(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-test");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

fn run(files: &[&str]) -> (Option<i32>, String) {
    let out: Output = Command::new(env!("CARGO_BIN_EXE_tether"))
        .args(["policy", "test"])
        .args(files)
        .env("RUST_LOG", "error")
        .output()
        .unwrap();
    (out.status.code(), String::from_utf8(out.stdout).unwrap())
}

fn header() -> String {
    format!(
        "rules:\n  - {}\ncases:\n",
        fixture("falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml")
    )
}

fn exec_pod() -> String {
    fixture("falco-k8s-audit/trace_files/k8s_audit/exec_pod.json")
}

#[test]
fn passing_cases_exit_zero() {
    let text = format!(
        "{}  - name: exec is seen\n    inputs: [{}]\n    expect:\n      hits: {{\"Attach/Exec Pod\": 1, \"Create Privileged Pod\": 0}}\n      total: 1\n      priorities: [NOTICE]\n  - name: a configmap without secrets is only activity\n    inputs: [{}]\n    expect:\n      hits: {{\"Create/Modify Configmap With Private Credentials\": 0, \"K8s ConfigMap Created\": 1}}\n      total: 1\n",
        header(),
        exec_pod(),
        fixture("falco-k8s-audit/trace_files/k8s_audit/create_configmap_no_sensitive_values.json"),
    );
    let (code, out) = run(&[&suite_file("pass.yaml", &text)]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("PASS exec is seen\n"), "{out}");
    assert!(
        out.contains("PASS a configmap without secrets is only activity\n"),
        "{out}"
    );
    assert!(
        out.ends_with("2 passed, 0 failed, 0 known differences, 0 skipped\n"),
        "{out}"
    );
}

#[test]
fn a_wrong_expectation_fails_with_the_case_line() {
    let text = format!(
        "{}  - name: fine\n    inputs: [{exec}]\n    expect: {{hits: {{\"Attach/Exec Pod\": 1}}}}\n  - name: wrong count\n    inputs: [{exec}]\n    expect:\n      hits: {{\"Attach/Exec Pod\": 2}}\n  - name: wrong priority\n    inputs: [{exec}]\n    expect: {{priorities: [CRITICAL]}}\n  - name: no such rule\n    inputs: [{exec}]\n    expect: {{hits: {{\"Attach Exec Pod\": 0}}}}\n",
        header(),
        exec = exec_pod(),
    );
    let path = suite_file("fail.yaml", &text);
    let (code, out) = run(&[&path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("PASS fine\n"), "{out}");
    assert!(
        out.contains(&format!(
            "FAIL wrong count ({path}:7)\n  - rule \"Attach/Exec Pod\": expected 2 hit(s), got 1\n"
        )),
        "{out}"
    );
    assert!(out.contains(&format!("FAIL wrong priority ({path}:11)\n  - expected at least one alert at priority CRITICAL, got none")), "{out}");
    assert!(out.contains("no rule of that name is loaded"), "{out}");
    assert!(
        out.ends_with("1 passed, 3 failed, 0 known differences, 0 skipped\n"),
        "{out}"
    );
}

#[test]
fn known_differences_and_skips_are_reported_with_their_reason() {
    let text = format!(
        "{}  - name: differs\n    known_difference: the rule was renamed upstream\n    inputs: [{exec}]\n    expect: {{hits: {{\"Attach/Exec Pod\": 3}}}}\n  - name: skipped\n    skip_reason: needs a syscall source\n    inputs: [{exec}]\n    expect: {{total: 0}}\n",
        header(),
        exec = exec_pod(),
    );
    let path = suite_file("known.yaml", &text);
    let (code, out) = run(&[&path]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("KNOWN DIFFERENCE differs ({path}:4): the rule was renamed upstream\n  - observed: rule \"Attach/Exec Pod\": expected 3 hit(s), got 1\n")), "{out}");
    assert!(
        out.contains(&format!(
            "SKIP skipped ({path}:8): needs a syscall source\n"
        )),
        "{out}"
    );
    assert!(
        out.ends_with("0 passed, 0 failed, 1 known differences, 1 skipped\n"),
        "{out}"
    );
}

#[test]
fn a_stale_known_difference_fails() {
    let text = format!(
        "{}  - name: stale mark\n    known_difference: used to differ\n    inputs: [{exec}]\n    expect: {{hits: {{\"Attach/Exec Pod\": 1}}}}\n",
        header(),
        exec = exec_pod(),
    );
    let (code, out) = run(&[&suite_file("stale.yaml", &text)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("marked as a known difference (used to differ) but passes"),
        "{out}"
    );
}

#[test]
fn inline_and_malformed_inputs() {
    let exec_json = std::fs::read_to_string(exec_pod()).unwrap();
    let text = format!(
        "{}  - name: inline text with a bad line\n    inputs:\n      - text: |\n          {}\n          {{\"kind\": 0}}\n    expect:\n      hits: {{\"Attach/Exec Pod\": 1}}\n      rejected: 1\n      rejected_contains: [\"inline@6:2\"]\n  - name: unexpected rejection fails\n    inputs:\n      - text: 'not json'\n    expect: {{total: 0}}\n",
        header(),
        exec_json.trim(),
    );
    let path = suite_file("inline.yaml", &text);
    let (code, out) = run(&[&path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("PASS inline text with a bad line\n"), "{out}");
    assert!(out.contains("FAIL unexpected rejection fails"), "{out}");
    assert!(
        out.contains("expected 0 rejected input(s), got 1: inline@"),
        "{out}"
    );
}

#[test]
fn suite_errors_name_file_and_line() {
    let text = format!(
        "{}  - name: typo\n    inputs: [{}]\n    expect:\n      hit: {{x: 1}}\n",
        header(),
        exec_pod()
    );
    let path = suite_file("broken.yaml", &text);
    let (code, out) = run(&[&path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with(&format!("ERROR {path}:7: unknown key `hit` in expect")),
        "{out}"
    );

    let (code, out) = run(&["/nonexistent/suite.yaml"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.starts_with("ERROR /nonexistent/suite.yaml: cannot read suite: "),
        "{out}"
    );

    let missing = suite_file("missing.yaml", "rules: [no-such-rules.yaml]\ncases: []\n");
    let (code, out) = run(&[&missing]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!(
            "ERROR {missing}:1: rules file \"no-such-rules.yaml\" not found"
        )),
        "{out}"
    );
}

#[test]
fn rules_that_do_not_load_fail_the_case() {
    let bad = suite_file(
        "bad-rules.yaml",
        "- rule: Broken\n  desc: d\n  condition: ka.verb in (\n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
    );
    let text = format!(
        "rules: [{bad}]\ncases:\n  - name: c\n    inputs: [{}]\n    expect: {{total: 0}}\n",
        exec_pod()
    );
    let (code, out) = run(&[&suite_file("uses-bad-rules.yaml", &text)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("  - rules do not load: {bad}:3:")),
        "{out}"
    );
}

#[test]
fn several_suites_add_up() {
    let one = format!(
        "{}  - name: a\n    inputs: [{}]\n    expect: {{total: 1}}\n",
        header(),
        exec_pod()
    );
    let a = suite_file("sum-a.yaml", &one);
    let b = suite_file("sum-b.yaml", &one);
    let (code, out) = run(&[&a, &b]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("\nPASS a\n").count(), 2, "{out}");
    assert!(
        out.ends_with("2 passed, 0 failed, 0 known differences, 0 skipped\n"),
        "{out}"
    );
}

#[test]
fn admission_decisions_are_checked() {
    let rules = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/suites/apiserver-captures/rules/exec-in-default.yaml")
        .display()
        .to_string();
    let exec = fixture("apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json");
    let text = format!(
        "rules: [{rules}]\ncases:\n  - name: denied\n    inputs: [{exec}]\n    expect: {{decision: deny}}\n  - name: wrongly expects allow\n    inputs: [{exec}]\n    expect: {{decision: allow}}\n  - name: no admission input\n    inputs: [{}]\n    expect: {{decision: allow}}\n",
        exec_pod()
    );
    let path = suite_file("decisions.yaml", &text);
    let (code, out) = run(&[&path]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("PASS denied\n"), "{out}");
    assert!(
        out.contains(&format!("FAIL wrongly expects allow ({path}:6)\n  - admission 86a3db6c-1363-49ba-8ed9-76a184852045 connect pods/exec default/good-pod: expected allow, got deny\n")),
        "{out}"
    );
    assert!(
        out.contains("  - expected decision allow, but the case has no admission input\n"),
        "{out}"
    );
}
