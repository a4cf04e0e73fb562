//! Malformed rules files and inputs: each gives a precise error naming the place and the
//! problem, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::{parse_document, RuleSet};

/// Loads one file named `r.yaml` and returns every error line.
fn errors(yaml: &str) -> Vec<String> {
    match RuleSet::from_texts(&[("r.yaml".to_string(), yaml.to_string())]) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(e) => e.iter().map(ToString::to_string).collect(),
    }
}

fn expect(yaml: &str, want: &str) {
    let errs = errors(yaml);
    assert!(
        errs.iter().any(|e| e == want),
        "wanted {want:?}\n got {errs:#?}\nfor:\n{yaml}"
    );
}

const OK_RULE: &str =
    "- rule: R\n  desc: d\n  condition: proc.name = bash\n  output: o\n  priority: WARNING\n";

#[test]
fn bad_yaml_of_every_shape() {
    // Unclosed flow sequence.
    let e = errors("- list: l\n  items: [a, b\n");
    assert!(e[0].starts_with("r.yaml:3:1: invalid YAML: "), "{e:?}");
    // Tab indentation.
    let e = errors("- rule: R\n\tcondition: x\n");
    assert_eq!(
        e,
        ["r.yaml:1:9: invalid YAML: while scanning a plain scalar, found a tab"]
    );
    // Unterminated quoted scalar.
    let e = errors("- rule: \"R\n");
    assert!(e[0].contains("invalid YAML"), "{e:?}");
    // Mapping where a sequence is expected.
    expect(
        "rule: R\ncondition: x\n",
        "r.yaml:1:1: a rules file must be a YAML sequence of items, found a mapping",
    );
    // A scalar document.
    expect(
        "just text\n",
        "r.yaml:1:1: a rules file must be a YAML sequence of items, found a scalar",
    );
    // An item that is not a mapping.
    expect(
        "- just a string\n",
        "r.yaml:1:3: each item must be a mapping (rule, macro, list, ...), found a scalar",
    );
    expect(
        "- [a, b]\n",
        "r.yaml:1:3: each item must be a mapping (rule, macro, list, ...), found a sequence",
    );
    // Duplicate keys.
    expect(
        "- rule: R\n  desc: d\n  condition: proc.name = a\n  condition: proc.name = b\n  output: o\n  priority: INFO\n",
        "r.yaml:4:3: duplicate key \"condition\" (first at line 3)",
    );
    // Undefined alias.
    let e = errors("- list: l\n  items: *nope\n");
    assert!(e[0].starts_with("r.yaml:2:"), "{e:?}");
    // Non-UTF-8 and missing files are reported, not panicked on.
    let dir = std::env::temp_dir().join(format!("tether-malformed-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = dir.join("bin.yaml");
    std::fs::write(&bin, [0x2d, 0x20, 0xff, 0xfe]).unwrap();
    let e = RuleSet::load(&[&bin, &dir.join("missing.yaml")])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("bin.yaml:1:1: the file is not UTF-8 text (invalid byte at offset 2)"),
        "{e}"
    );
    assert!(
        e.contains("missing.yaml:1:1: cannot read the file: "),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_conditions_of_every_shape() {
    let rule = |cond: &str| {
        format!("- rule: R\n  desc: d\n  condition: {cond}\n  output: o\n  priority: WARNING\n")
    };
    // Column 14 is where the condition starts on line 3.
    expect(
        &rule("proc.name ="),
        "r.yaml:3:25: rule \"R\": invalid condition: expected a value, found end of condition",
    );
    expect(&rule("proc.name bash"), "r.yaml:3:24: rule \"R\": invalid condition: expected an operator after 'proc.name', found 'bash'");
    expect(&rule("(proc.name = a"), "r.yaml:3:28: rule \"R\": invalid condition: expected ')' to close the '(' at offset 0, found end of condition");
    expect(
        &rule("proc.name = a)"),
        "r.yaml:3:27: rule \"R\": invalid condition: unbalanced ')': no matching '('",
    );
    expect(&rule("proc.name = a and"), "r.yaml:3:31: rule \"R\": invalid condition: expected a condition (a field comparison, a macro or '('), found end of condition");
    expect(&rule("proc.name in bash"), "r.yaml:3:27: rule \"R\": invalid condition: expected '(' and a list after 'in', found 'bash'");
    expect(
        &rule("proc.name in (a b)"),
        "r.yaml:3:30: rule \"R\": invalid condition: expected ',' or ')' in the list, found 'b'",
    );
    expect(
        &rule("\"proc.name = 'a\""),
        "r.yaml:3:27: rule \"R\": invalid condition: unterminated string: expected a closing '",
    );
    expect(
        &rule("proc.name = a or or b"),
        "r.yaml:3:31: rule \"R\": invalid condition: expected a condition, found keyword 'or'",
    );
    expect(
        &rule("proc.aname[2 = x"),
        "r.yaml:3:24: rule \"R\": invalid condition: unterminated field argument: expected ']'",
    );
    expect(
        &rule("proc.name = a ; b"),
        "r.yaml:3:28: rule \"R\": invalid condition: unexpected character ';'",
    );
    expect(
        &rule("''"),
        "r.yaml:3:15: rule \"R\": invalid condition: empty condition",
    );
    // Unknown field, macro, list-as-macro, bad argument, operator/type mismatches.
    expect(
        &rule("proc.nme = bash"),
        "r.yaml:3:14: rule \"R\": unknown field \"proc.nme\"",
    );
    expect(
        &rule("proc.name = a and not_a_macro"),
        "r.yaml:3:32: rule \"R\": undefined macro \"not_a_macro\"",
    );
    expect(
        &rule("proc.aname[x] = sshd"),
        "r.yaml:3:14: rule \"R\": field \"proc.aname\": argument \"x\" is not a valid index",
    );
    expect(
        &rule("ka.uri.param = x"),
        "r.yaml:3:14: rule \"R\": field \"ka.uri.param\" requires an argument in brackets",
    );
    expect(
        &rule("proc.pid contains 1"),
        "r.yaml:3:14: rule \"R\": operator contains is not supported on numeric field \"proc.pid\"",
    );
    expect(
        &rule("proc.pid = abc"),
        "r.yaml:3:25: rule \"R\": expected a number to compare with \"proc.pid\", found \"abc\"",
    );
    expect(
        &rule("fd.sport in (80, http)"),
        "r.yaml:3:31: rule \"R\": expected a number to compare with \"fd.sport\", found \"http\"",
    );
    expect(
        &rule("proc.name regex \"a(b\""),
        "r.yaml:3:30: rule \"R\": invalid regex \"a(b\": error: unclosed group",
    );
    expect(
        &rule("proc.name bcontains xyz"),
        "r.yaml:3:34: rule \"R\": bcontains needs an even number of hex digits, found \"xyz\"",
    );
    expect(
        &rule("proc.name glob \"a[b\""),
        "r.yaml:3:29: rule \"R\": invalid glob \"a[b\": unclosed character class; missing ']'",
    );
    let e = errors(&rule("json[$$] exists"));
    assert!(
        e[0].starts_with("r.yaml:3:14: rule \"R\": field \"json\": invalid JSONPath \"$$\": "),
        "{e:?}"
    );
    expect(
        &rule("json[$.[] exists"),
        "r.yaml:3:18: rule \"R\": invalid condition: unterminated field argument: expected ']'",
    );
}

#[test]
fn bad_items() {
    // Missing keys, wrong types, bad priority.
    expect(
        "- rule: R\n  desc: d\n  output: o\n  priority: INFO\n",
        "r.yaml:1:3: rule \"R\": missing required key(s): condition",
    );
    expect("- rule: R\n  condition: proc.name = a\n  output: o\n  priority: SEVERE\n", "r.yaml:4:13: rule \"R\": unknown priority \"SEVERE\": expected one of emergency, alert, critical, error, warning, notice, informational (info), debug");
    expect(
        "- rule: R\n  condition: proc.name = a\n  output: o\n  priority: INFO\n  enabled: maybe\n",
        "r.yaml:5:12: rule \"R\": \"enabled\" must be true or false, found \"maybe\"",
    );
    expect(
        "- rule: R\n  condition: proc.name = a\n  output: o\n  priority: INFO\n  tags: foo\n",
        "r.yaml:5:9: rule \"R\": \"tags\" must be a list, found a scalar",
    );
    expect(
        "- rule: R\n  condition: [a]\n  output: o\n  priority: INFO\n",
        "r.yaml:2:14: rule \"R\": \"condition\" must be a condition string, found a sequence",
    );
    expect(
        "- rule: \n  condition: a\n",
        "r.yaml:1:3: \"rule\" must be a non-empty name, found null",
    );
    expect(
        "- list: l\n  items: a\n",
        "r.yaml:2:10: list \"l\": \"items\" must be a list, found a scalar",
    );
    expect(
        "- list: l\n",
        "r.yaml:1:3: list \"l\": missing required key: items",
    );
    expect(
        "- macro: m\n",
        "r.yaml:1:3: macro \"m\": missing required key: condition",
    );
    expect("- macro: bad-name\n  condition: a\n", "r.yaml:1:3: macro \"bad-name\": a macro name must be an identifier ([A-Za-z_][A-Za-z0-9_]*)");
    // Duplicates in one file; append/override of something missing.
    expect(&format!("{OK_RULE}{OK_RULE}"), "r.yaml:6:3: rule \"R\": is defined twice in this file (first at line 1); use append or override to change it");
    expect(
        "- rule: R\n  condition: and x\n  append: true\n",
        "r.yaml:1:3: rule \"R\": appends to a rule that is not defined earlier",
    );
    expect(
        "- rule: R\n  condition: x\n  override:\n    condition: append\n",
        "r.yaml:1:3: rule \"R\": overrides a rule that is not defined earlier",
    );
    expect(
        "- list: l\n  items: [a]\n  append: true\n",
        "r.yaml:1:3: list \"l\": appends to or overrides a list that is not defined earlier",
    );
    expect(&format!("{OK_RULE}- rule: R\n  priority: INFO\n  override:\n    priority: append\n"), "r.yaml:9:5: rule \"R\": key \"priority\" cannot be overridden with append: expected one of condition, output, desc, tags, exceptions");
    expect(&format!("{OK_RULE}- rule: R\n  condition: and 1\n  output: x\n  override:\n    condition: append\n"), "r.yaml:8:3: rule \"R\": key \"output\" is not listed in \"override\"");
    expect(&format!("{OK_RULE}- rule: R\n  condition: x\n  append: true\n  override:\n    condition: append\n"), "r.yaml:6:3: rule \"R\": \"append\" and \"override\" cannot be used together");
    // Macro cycles; engine version.
    expect(
        "- macro: a\n  condition: b\n- macro: b\n  condition: a\n",
        "r.yaml:4:14: macro \"b\": macro cycle: a -> b -> a",
    );
    expect(
        "- required_engine_version: 9.0.0\n",
        "r.yaml:1:28: the file requires engine version 9.0.0, Tether implements 0.57.0",
    );
    expect("- required_engine_version: latest\n", "r.yaml:1:28: required_engine_version \"latest\" is not a version: expected MAJOR.MINOR.PATCH or a number");
    // Output with an unknown field; a field from the wrong source.
    expect(
        "- rule: R\n  condition: proc.name = a\n  output: x %proc.nme\n  priority: INFO\n",
        "r.yaml:3:13: rule \"R\": invalid output: unknown field \"proc.nme\"",
    );
    expect("- rule: R\n  condition: ka.verb = get\n  output: o\n  priority: INFO\n", "r.yaml:2:14: rule \"R\": field \"ka.verb\" is not available for source syscall (it comes from k8s_audit, k8s_admission)");
}

#[test]
fn bad_exceptions() {
    let base =
        "- rule: R\n  condition: proc.name = a\n  output: o\n  priority: INFO\n  exceptions:\n";
    expect(
        &format!("{base}    - fields: [proc.name]\n"),
        "r.yaml:6:7: rule \"R\": an exception needs a \"name\"",
    );
    expect(
        &format!("{base}    - name: e\n      fields: [proc.name, proc.pname]\n      comps: [=]\n"),
        "r.yaml:8:14: rule \"R\": exception \"e\": 1 comps for 2 fields",
    );
    expect(&format!("{base}    - name: e\n      fields: [proc.name]\n      comps: [near]\n"), "r.yaml:8:14: rule \"R\": exception \"e\": comps item 0 \"near\" is not a comparison operator");
    expect(&format!("{base}    - name: e\n      fields: [proc.name, proc.pname]\n      values:\n        - [a]\n"), "r.yaml:9:11: rule \"R\": exception \"e\": value has 1 entries for 2 fields");
    expect(
        &format!("{base}    - name: e\n      fields: [proc.nope]\n      values:\n        - [a]\n"),
        "r.yaml:9:11: rule \"R\": exception \"e\": unknown field \"proc.nope\"",
    );
    expect(&format!("{base}    - name: e\n      fields: [proc.name]\n      shape: x\n"), "r.yaml:8:7: rule \"R\": exception \"e\": unknown key \"shape\": expected name, fields, comps, values");
    expect(&format!("{base}    - name: e\n      fields: [proc.pid]\n      values:\n        - [abc]\n"), "r.yaml:9:11: rule \"R\": exception \"e\": expected a number to compare with \"proc.pid\", found \"abc\"");
}

#[test]
fn bad_tether_keys_and_sequences() {
    let base = "- rule: R\n  condition: proc.name = a\n  output: o\n  priority: INFO\n  tether:\n";
    expect(
        &format!("{base}    mode: block\n"),
        "r.yaml:6:11: rule \"R\": tether.mode must be detect or enforce, found \"block\"",
    );
    expect(&format!("{base}    actions: [explode]\n"), "r.yaml:6:14: rule \"R\": tether.actions: unknown action \"explode\": expected one of block, kill, isolate, taint, cordon, delete, label, annotate, deny-identity, notify");
    expect(&format!("{base}    colour: red\n"), "r.yaml:6:5: rule \"R\": unknown key \"tether.colour\": expected mode, actions, scope, admission");
    expect(&format!("{base}    scope: {{ namespaces: [\"prod-[\"] }}\n"), "r.yaml:6:26: rule \"R\": tether.scope.namespaces: invalid glob \"prod-[\": unclosed character class; missing ']'");
    expect(&format!("{base}    scope: {{ pods: [a] }}\n"), "r.yaml:6:14: rule \"R\": unknown key \"tether.scope.pods\": expected namespaces, exclude_namespaces, namespace_labels, object_labels");
    expect(&format!("{base}    scope:\n      object_labels:\n        matchExpressions: [{{key: a, operator: Near}}]\n"), "r.yaml:8:28: rule \"R\": tether.scope.object_labels: operator \"Near\" must be In, NotIn, Exists or DoesNotExist");
    expect(&format!("{base}    admission: true\n"), "r.yaml:6:5: rule \"R\": tether.admission applies to k8s_audit rules only, this rule's source is syscall");
    let seq = |body: &str| format!("{OK_RULE}- sequence: S\n{body}");
    expect(&seq("  by: [k8s.pod.uid]\n  within: 10 minutes\n  steps: [R, R]\n  priority: INFO\n"), "r.yaml:8:11: sequence \"S\": \"within\" value \"10 minutes\" is not a duration: expected e.g. 500ms, 30s, 10m, 1h30m");
    expect(
        &seq("  by: [k8s.pod.uid]\n  within: 10m\n  steps: [R, Missing]\n  priority: INFO\n"),
        "r.yaml:9:14: sequence \"S\": step \"Missing\" is not a loaded rule",
    );
    expect(
        &seq("  by: [k8s.pod.nope]\n  within: 10m\n  steps: [R, R]\n  priority: INFO\n"),
        "r.yaml:7:8: sequence \"S\": \"by\": unknown field \"k8s.pod.nope\"",
    );
    expect(
        &seq("  by: [k8s.pod.uid]\n  within: 10m\n  steps: [R]\n  priority: INFO\n"),
        "r.yaml:9:10: sequence \"S\": \"steps\" must be a list of at least two rule names",
    );
    expect(
        &seq("  within: 10m\n  steps: [R, R]\n"),
        "r.yaml:6:3: sequence \"S\": missing required key(s): by, priority",
    );
}

#[test]
fn unknown_keys_and_items_are_warnings() {
    let yaml = format!("{OK_RULE}  colour: red\n- plugin: x\n- required_plugin_versions:\n    - name: k8saudit\n      version: 0.1.0\n- rule: Other\n  source: aws_cloudtrail\n  condition: ct.name = x\n  output: o\n  priority: INFO\n");
    let rs = RuleSet::from_texts(&[("r.yaml".into(), yaml)]).unwrap();
    let w: Vec<String> = rs.warnings().iter().map(ToString::to_string).collect();
    assert!(
        w.contains(&"r.yaml:6:3: rule \"R\": unknown key \"colour\" ignored".to_string()),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|x| x.starts_with("r.yaml:7:3: unknown top-level item with keys [plugin]")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|x| x.starts_with("r.yaml:8:3: required_plugin_versions is ignored")),
        "{w:#?}"
    );
    assert!(
        w.iter().any(|x| x.starts_with(
            "r.yaml:12:11: rule \"Other\": source \"aws_cloudtrail\" is not one Tether provides"
        )),
        "{w:#?}"
    );
    assert_eq!(rs.rules().len(), 1);
    let rs = RuleSet::from_texts(&[(
        "u.yaml".into(),
        format!(
            "- macro: unused\n  condition: proc.name = x\n- list: spare\n  items: [a]\n{OK_RULE}"
        ),
    )])
    .unwrap();
    let w: Vec<String> = rs.warnings().iter().map(ToString::to_string).collect();
    assert!(
        w.contains(&"u.yaml:1:3: macro \"unused\": macro is not used by any rule".to_string()),
        "{w:#?}"
    );
    assert!(
        w.contains(
            &"u.yaml:3:3: list \"spare\": list is not used by any rule or macro".to_string()
        ),
        "{w:#?}"
    );
}

#[test]
fn directories_load_in_name_order() {
    let dir = std::env::temp_dir().join(format!("tether-dir-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("b.yaml"),
        "- list: l\n  items: [bash]\n  append: true\n",
    )
    .unwrap();
    std::fs::write(dir.join("a.yaml"), "- list: l\n  items: [sh]\n- rule: R\n  condition: proc.name in (l)\n  output: o\n  priority: INFO\n").unwrap();
    std::fs::write(dir.join("notes.txt"), "not rules").unwrap();
    let rs = RuleSet::load(&[&dir]).unwrap();
    assert_eq!(rs.rules().len(), 1);
    assert!(rs.rules()[0].file.ends_with("a.yaml"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_inputs() {
    let cases: &[(&str, &str)] = &[
        ("{\"kind\": 0}", "in:1: data not recognized as a k8s audit event: expected kind \"Event\", found 0"),
        ("{\"kind\":\"Event\",\"verb\":\"get\"}", "in:1: data not recognized as a k8s audit event: audit event has no \"stage\""),
        ("{\"kind\":\"Event\",\"verb\":1,\"stage\":\"x\"}", "in:1: data not recognized as a k8s audit event: field \"verb\" must be a string, found a number"),
        ("{\"kind\":\"Event\",\"apiVersion\":\"audit.k8s.io/v2\",\"verb\":\"get\",\"stage\":\"x\"}", "in:1: data not recognized as a k8s audit event: unsupported apiVersion \"audit.k8s.io/v2\": expected audit.k8s.io/v1 or audit.k8s.io/v1beta1"),
        ("{\"kind\":\"Event\",\"verb\":\"get\",\"stage\":\"x\",\"objectRef\":[]}", "in:1: data not recognized as a k8s audit event: field \"objectRef\" must be an object, found an array"),
        ("{\"kind\":\"EventList\",\"items\":{}}", "in:1: EventList \"items\" must be an array, found an object"),
        ("{\"kind\":\"Pod\"}", "in:1: unsupported kind \"Pod\": expected Event, EventList or AdmissionReview"),
        ("\n\n{\"kind\": \"Event\", }", "in:3: malformed JSON: key must be a string at line 3 column 19"),
        ("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\"}", "in:1: AdmissionReview has no \"request\""),
        ("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\",\"operation\":\"PATCH\"}}", "in:1: request.operation \"PATCH\" is not one of CREATE, UPDATE, DELETE, CONNECT"),
        ("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":\"u\",\"operation\":\"CREATE\"}}", "in:1: AdmissionReview request has no \"resource\" object"),
        ("{\"kind\":\"AdmissionReview\",\"apiVersion\":\"admission.k8s.io/v1\",\"request\":{\"uid\":7}}", "in:1: request.uid must be a string, found a number"),
        ("[1]", "in:1: array item 0: data not recognized as a k8s audit event: expected an audit event object, found a number"),
        ("{\"kind\": \"Event\"", "in:1: truncated JSON value starting here: EOF while parsing an object at line 1 column 16"),
    ];
    for (doc, want) in cases {
        let r = parse_document("in", doc.as_bytes());
        let got: Vec<String> = r
            .iter()
            .filter_map(|x| x.as_ref().err())
            .map(ToString::to_string)
            .collect();
        assert!(
            got.iter().any(|g| g == want),
            "wanted {want:?}\n got {got:#?}"
        );
    }
}
