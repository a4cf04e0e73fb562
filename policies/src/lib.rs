//! Tether's rule engine: the event model, the field registry, Kubernetes input parsing, the
//! Falco-compatible rules language (loader, condition parser, compiler, evaluator), output
//! templating, Falco-compatible alerts, and admission decisions.
//!
//! Pure: no async runtime, no Kubernetes client, no eBPF; it reads rules files only.
//!
//! ```text
//! bytes --input::parse_document--> Event --RuleSet::evaluate--> Vec<Match>
//!                                                   |--> Alert::from_match  (Falco JSON)
//!                                                   '--> decision::decide   (admission verdict)
//! rules files --RuleSet::load--> text -> YAML (with positions) -> items (append/override)
//!             -> condition::parse (tokens -> AST) -> compile (macros once, fields -> ids,
//!                lists -> sets, regex/glob once) -> index by evt.type / resource / verb
//! ```
//!
//! Semantics follow Falco:
//! - a field an event does not carry is *missing*: every comparison with it is false (also
//!   `!=`), `exists` is false, outputs print `<NA>` and `output_fields` hold `null`;
//! - list-valued fields (`ka.user.groups`, `ka.req.pod.containers.image`, ...) need every
//!   element in the set for `in`, one for `intersects`, and one for the other operators;
//!   `proc.aname`/`proc.aexepath` without an index match when any ancestor does;
//! - rules files load in order; `append: true` / `override:` change earlier definitions, a
//!   plain redefinition in a later file replaces the earlier one, the same name twice in one
//!   file is an error; unknown keys and unknown top-level items are warnings;
//!   `required_plugin_versions` is ignored with a warning (the k8s_audit fields are built in);
//! - `k8s_audit` rules run on audit events, and on admission events when they say
//!   `tether: { admission: true }`; `k8s_admission` rules run on admission events only.
//!
//! Fields Tether registers but does not produce (for instance `thread.cap_effective`,
//! `fd.rip`, `proc.is_exe_upper_layer`) are listed by [`fields::registry`] with
//! `produced: false` and evaluate as missing, so Falco's files load and behave as Falco does
//! when those values are absent.
//!
//! Errors: [`LoadError`] displays as `FILE:LINE:COL: rule "NAME": what is wrong` (`macro`,
//! `list` or `sequence` for those items, no item part for file-level problems);
//! [`InputError`] as `FILE:LINE: what is wrong`.

pub mod alert;
mod body;
pub mod condition;
pub mod decision;
pub mod doc;
pub mod event;
pub mod fields;
pub mod input;
pub mod output;
pub mod rules;
pub mod source;
pub mod value;

pub use alert::{Alert, AlertAction, Correlation};
pub use decision::{decide, DecisionOptions, RuleOutcome, Verdict};
pub use doc::{Doc, Ref, View};
pub use event::{
    ContainerInfo, Event, FdInfo, K8sInfo, ProcInfo, SessionFields, SyscallEvent, UserInfo,
};
pub use fields::{registry, FieldDef, FieldId, FieldType};
pub use input::{parse_document, InputError};
pub use rules::{
    ActionKind, Evaluation, LabelSelector, LoadError, LoadErrors, LoadWarning, Match, Mode,
    OutputMatch, Partial, Priority, RuleInfo, RuleSet, Scope, SequenceInfo, TetherSettings,
};
pub use source::Source;
pub use value::Value;
