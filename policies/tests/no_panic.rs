//! The condition parser, the rules loader and the input parser never panic: every input,
//! however broken, yields a value or an error. Exhaustive single-edit mutations of real
//! texts plus deterministic pseudo-random garbage.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use policies::condition::parse;
use policies::{parse_document, RuleSet};

const RULES: &str = r#"- list: shells
  items: [bash, "sh", zsh]
- macro: spawned
  condition: evt.type in (execve, execveat) and evt.res = SUCCESS
- rule: Shell
  desc: a shell
  condition: >
    spawned and proc.name in (shells) and not proc.aname[2] startswith "sshd"
    and (fd.sport > 1024 or tolower(proc.exepath) glob '/usr/*') and proc.env[HOME] exists
  output: shell %proc.cmdline by %user.name (%proc.aname[1])
  priority: WARNING
  exceptions:
    - name: ok
      fields: [proc.name, container.image.repository]
      comps: [=, in]
      values:
        - [bash, [nginx, "redis"]]
  tether: { mode: enforce, actions: [kill], scope: { namespaces: ["prod-*"] } }
- sequence: S
  by: [k8s.pod.uid]
  within: 10m
  steps: [Shell, Shell]
  priority: INFO
"#;

const COND: &str = r#"a and (b or not c) and proc.name in (x, "y z") and ka.uri.param[command] contains sh and len(basename(fd.name)) >= val(proc.pid) and json[$.a[?(@.b == 'c')]] exists"#;

const INPUT: &str = r#"{"kind":"Event","apiVersion":"audit.k8s.io/v1","stage":"ResponseComplete","verb":"create","requestURI":"/api/v1/namespaces/d/pods/p/exec?command=sh","user":{"username":"u","groups":["g"]},"objectRef":{"resource":"pods","namespace":"d"},"requestObject":{"spec":{"containers":[{"image":"nginx:1"}]}}}
{"kind":"AdmissionReview","apiVersion":"admission.k8s.io/v1","request":{"uid":"x","operation":"CONNECT","resource":{"group":"","version":"v1","resource":"pods"},"subResource":"exec","namespace":"d","name":"p","options":{"command":["sh"]}}}
"#;

const NOISE: &[&str] = &[
    "", "(", ")", "[", "]", "{", "}", ",", ":", "-", " ", "\n", "\t", "\"", "'", "%", "=", "!",
    "<", ">", "\\", "#", "*", "&", "é", "\u{0}", "and", "not ", "in (", "- ", ": ",
];

/// Every deletion, every insertion of every noise token, and every truncation.
fn mutations(text: &str) -> impl Iterator<Item = String> + '_ {
    let cuts: Vec<usize> = (0..=text.len())
        .filter(|i| text.is_char_boundary(*i))
        .collect();
    let cuts2 = cuts.clone();
    let deletions = cuts
        .clone()
        .into_iter()
        .zip(cuts.into_iter().skip(1))
        .map(move |(a, b)| format!("{}{}", &text[..a], &text[b..]));
    let inserts = cuts2.clone().into_iter().flat_map(move |i| {
        NOISE
            .iter()
            .map(move |n| format!("{}{}{}", &text[..i], n, &text[i..]))
    });
    let truncs = cuts2.into_iter().map(move |i| text[..i].to_string());
    deletions.chain(inserts).chain(truncs)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn condition_parser_survives_mutations() {
    let mut n = 0;
    for m in mutations(COND) {
        let _ = parse(&m);
        n += 1;
    }
    assert!(n > 1000);
}

#[test]
fn loader_survives_mutations() {
    // Every 7th position keeps the run short in debug builds while covering each construct.
    let mut n = 0;
    for (i, m) in mutations(RULES).enumerate() {
        if i % 7 != 0 {
            continue;
        }
        let r = RuleSet::from_texts(&[("m.yaml".into(), m)]);
        if let Err(e) = r {
            for x in e.iter() {
                assert!(x.line >= 1 && x.col >= 1, "{x}");
                assert!(!x.message.is_empty());
            }
        }
        n += 1;
    }
    assert!(n > 500, "{n}");
}

#[test]
fn input_parser_survives_mutations() {
    for m in mutations(INPUT) {
        for r in parse_document("in", m.as_bytes()) {
            if let Err(e) = r {
                assert!(e.line >= 1, "{e}");
            }
        }
    }
}

#[test]
fn random_garbage() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let alphabet: Vec<char> = "ab.()[]{},:-\"' \n\t%=!<>\\#*&$@?/0123456789éandornotin"
        .chars()
        .collect();
    for _ in 0..3000 {
        let len = (rng.next() % 120) as usize;
        let s: String = (0..len)
            .map(|_| alphabet[(rng.next() % alphabet.len() as u64) as usize])
            .collect();
        let _ = parse(&s);
        let _ = RuleSet::from_texts(&[("g.yaml".into(), s.clone())]);
        let _ = RuleSet::from_texts(&[(
            "g.yaml".into(),
            format!("- rule: R\n  condition: {s}\n  output: o %{s}\n  priority: INFO\n"),
        )]);
        let bytes: Vec<u8> = (0..len).map(|_| (rng.next() & 0xff) as u8).collect();
        let _ = parse_document("g", &bytes);
        let _ = parse_document("g", s.as_bytes());
    }
}

#[test]
fn deep_macro_and_list_chains_are_errors_not_overflows() {
    let mut y = String::new();
    for i in 0..1000 {
        y.push_str(&format!(
            "- macro: m{i}\n  condition: m{} or proc.pid = {i}\n- list: l{i}\n  items: [l{}, x]\n",
            i + 1,
            i + 1
        ));
    }
    y.push_str("- macro: m1000\n  condition: proc.name in (l0)\n- list: l1000\n  items: [y]\n");
    y.push_str("- rule: R\n  condition: m0\n  output: o\n  priority: INFO\n");
    let e = RuleSet::from_texts(&[("deep.yaml".into(), y)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("macros nest deeper than 32 levels"),
        "{}",
        &e[..e.len().min(2000)]
    );
    let mut y = String::new();
    for i in 0..1000 {
        y.push_str(&format!("- list: l{i}\n  items: [l{}, x]\n", i + 1));
    }
    y.push_str("- list: l1000\n  items: [y]\n- rule: R\n  condition: proc.name in (l0)\n  output: o\n  priority: INFO\n");
    let e = RuleSet::from_texts(&[("deep.yaml".into(), y)])
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("lists nest deeper than 32 levels"),
        "{}",
        &e[..e.len().min(2000)]
    );
}

#[test]
fn the_valid_originals_load() {
    let rs = RuleSet::from_texts(&[("ok.yaml".into(), RULES.into())]).unwrap();
    assert_eq!(rs.rules().len(), 1);
    assert_eq!(rs.sequences().len(), 1);
    parse(COND).unwrap();
    assert!(parse_document("in", INPUT.as_bytes())
        .iter()
        .all(Result::is_ok));
}

#[test]
fn deeply_nested_yaml_is_an_error_not_an_overflow() {
    for open in ["[", "{a: ", "- "] {
        let y = open.repeat(100_000);
        let r = RuleSet::from_texts(&[("nest.yaml".into(), y)]);
        assert!(r.is_err(), "{open}");
    }
    let y = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert!(RuleSet::from_texts(&[("nest.yaml".into(), y)]).is_err());
}
