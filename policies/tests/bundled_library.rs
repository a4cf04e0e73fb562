//! The rule library embedded in the binary loads clean and holds what its README promises.

use policies::{RuleSet, Source};

#[test]
fn bundled_library_loads_without_errors() {
    let set = match RuleSet::try_bundled_library() {
        Ok(set) => set,
        Err(errs) => panic!("the bundled library does not load:\n{errs}"),
    };
    let names: Vec<&str> = set.rules().iter().map(|r| r.name.as_str()).collect();
    // Falco's k8s_audit rules (what `tether audit-bridge` uses by default) are there...
    assert!(names.contains(&"Attach/Exec Pod"), "{names:?}");
    assert!(names.contains(&"Create Privileged Pod"), "{names:?}");
    // ...and rules that run at admission time.
    assert!(set
        .rules()
        .iter()
        .any(|r| r.source == Source::K8sAdmission || r.tether.admission));
    // ...and Falco's stable syscall rules, what `tether node` runs without `--rules`.
    for name in [
        "Terminal shell in container",
        "Read sensitive file untrusted",
    ] {
        let rule = set.rules().iter().find(|r| r.name == name);
        assert!(
            rule.is_some_and(|r| r.source == Source::Syscall),
            "{name}: {names:?}"
        );
    }
    // The same files are embedded as listed.
    assert!(policies::rules::bundled_files().len() >= 7);
}
