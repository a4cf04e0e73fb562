//! End-to-end contract of `tether policy lint`: exit codes and the
//! `FILE:LINE:COL: rule "NAME": problem` line format, on the real Falco files and broken ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures");

fn lint(files: &[String]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether"))
        .arg("policy")
        .arg("lint")
        .args(files)
        .env("RUST_LOG", "error")
        .output()
        .unwrap()
}

fn rules_file(rel: &str) -> String {
    let p = PathBuf::from(FIXTURES).join("falco-rules").join(rel);
    assert!(p.is_file(), "missing fixture {}", p.display());
    p.display().to_string()
}

fn tmp_file(name: &str, text: &str) -> String {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("policy-lint");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

/// One problem line split into its parts: (file, line, col, rule, what).
fn split(line: &str) -> (String, usize, usize, String, String) {
    let (head, rest) = line
        .split_once(": rule \"")
        .unwrap_or_else(|| panic!("no `: rule \"` in {line:?}"));
    let mut parts = head.rsplitn(3, ':');
    let col = parts
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("col in {line:?}"));
    let ln = parts
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("line in {line:?}"));
    let file = parts.next().unwrap().to_string();
    let (rule, what) = rest
        .split_once("\": ")
        .unwrap_or_else(|| panic!("no `\": ` after the rule name in {line:?}"));
    (file, ln, col, rule.to_string(), what.to_string())
}

#[test]
fn the_four_falco_files_lint_clean_in_falco_load_order() {
    let files = [
        rules_file("falco_rules.yaml"),
        rules_file("falco-incubating_rules.yaml"),
        rules_file("falco-sandbox_rules.yaml"),
        rules_file("plugins/k8saudit/rules/k8s_audit_rules.yaml"),
    ];
    let out = lint(&files);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.is_empty(), "{stdout}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ok: 4 file(s)"));
}

#[test]
fn k8s_audit_rules_alone_lint_clean() {
    let out = lint(&[rules_file("plugins/k8saudit/rules/k8s_audit_rules.yaml")]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn broken_rules_give_one_positioned_line_each() {
    // (file name, text, rule name, line of the problem)
    let cases = [
        (
            "syntax.yaml",
            "- rule: Bad Syntax\n  desc: d\n  condition: ka.verb = create and (\n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
            "Bad Syntax",
            3,
        ),
        (
            "field.yaml",
            "- rule: Unknown Field\n  desc: d\n  condition: ka.no.such.field = 1\n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
            "Unknown Field",
            3,
        ),
        (
            "priority.yaml",
            "- rule: Bad Priority\n  desc: d\n  condition: ka.verb = create\n  output: o\n  priority: LOUD\n  source: k8s_audit\n",
            "Bad Priority",
            5,
        ),
        (
            "operator.yaml",
            "\n\n- rule: Bad Operator\n  desc: d\n  condition: ka.verb ~= create\n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
            "Bad Operator",
            5,
        ),
        (
            "output.yaml",
            "- rule: Bad Output Field\n  desc: d\n  condition: ka.verb = create\n  output: user=%ka.no_such_field\n  priority: WARNING\n  source: k8s_audit\n",
            "Bad Output Field",
            4,
        ),
    ];
    for (name, text, rule, line) in cases {
        let path = tmp_file(name, text);
        let out = lint(std::slice::from_ref(&path));
        let stdout = String::from_utf8(out.stdout).unwrap();
        assert_eq!(out.status.code(), Some(1), "{name}: {stdout}");
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(lines.len(), 1, "{name}: one problem, one line:\n{stdout}");
        let (file, ln, col, r, what) = split(lines[0]);
        assert_eq!(file, path, "{name}");
        assert_eq!(r, rule, "{name}");
        assert_eq!(ln, line, "{name}: {}", lines[0]);
        assert!(col >= 1, "{name}: {}", lines[0]);
        assert!(!what.trim().is_empty(), "{name}");
    }
}

#[test]
fn problems_in_several_files_are_all_reported() {
    let a = tmp_file(
        "multi-a.yaml",
        "- rule: First\n  desc: d\n  condition: ka.verb =\n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
    );
    let b = tmp_file(
        "multi-b.yaml",
        "- rule: Second\n  desc: d\n  condition: ka.verb in (create\n  output: o\n  priority: WARNING\n  source: k8s_audit\n",
    );
    let out = lint(&[a.clone(), b.clone()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let parsed: Vec<_> = stdout.lines().map(split).collect();
    assert!(
        parsed.iter().any(|p| p.0 == a && p.3 == "First"),
        "{stdout}"
    );
    assert!(
        parsed.iter().any(|p| p.0 == b && p.3 == "Second"),
        "{stdout}"
    );
}

#[test]
fn files_load_together() {
    // A rule in the second file uses a macro and a list from the first, as in Falco.
    let base = tmp_file(
        "order-base.yaml",
        "- macro: kcreate\n  condition: ka.verb=create\n- list: watched\n  items: [pods]\n",
    );
    let user = tmp_file(
        "order-user.yaml",
        "- rule: Uses Base\n  desc: d\n  condition: kcreate and ka.target.resource in (watched)\n  output: o %ka.user.name\n  priority: NOTICE\n  source: k8s_audit\n",
    );
    let ok = lint(&[base.clone(), user.clone()]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // Alone, the rule names a macro that no file defines.
    let bad = lint(std::slice::from_ref(&user));
    assert_eq!(bad.status.code(), Some(1));
    let stdout = String::from_utf8(bad.stdout).unwrap();
    let (file, line, _, rule, what) = split(stdout.lines().next().unwrap());
    assert_eq!((file, line, rule), (user, 3, "Uses Base".to_string()));
    assert!(what.contains("kcreate"), "{what}");
}

#[test]
fn missing_and_non_yaml_files_fail() {
    let out = lint(&["/nonexistent/rules.yaml".to_string()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with("/nonexistent/rules.yaml:"), "{stdout}");

    let junk = tmp_file("junk.yaml", "- rule: [unclosed\n");
    let out = lint(std::slice::from_ref(&junk));
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.starts_with(&format!("{junk}:")), "{stdout}");
}

#[test]
fn no_file_is_a_usage_error() {
    let out = lint(&[]);
    assert_eq!(out.status.code(), Some(2));
}
