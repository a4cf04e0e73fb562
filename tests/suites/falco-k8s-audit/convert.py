#!/usr/bin/env python3
"""Convert Falco's k8s-audit test cases into a `tether policy test` suite.

Source: ../shared/fixtures/falco-k8s-audit/falco_k8s_audit_tests.yaml (falco 0.34.1 `test/`).
Output: falco_k8s_audit_tests.yaml beside this script (committed; re-run only when the
source or the mapping below changes):

    python3 tests/suites/falco-k8s-audit/convert.py

Mapping of one Falco case to one suite case:

| Falco key                  | suite key                                                     |
|----------------------------|---------------------------------------------------------------|
| rules_file                 | rules (BUILD_DIR copies and ./rules/... mapped to fixtures)   |
| addl_cmdline_opts open_params=trace_files/... | inputs (the trace file)                    |
| detect: True + detect_counts | expect.hits (exact count per named rule)                    |
| detect: True + detect_level  | expect.priorities (at least one alert at that priority)     |
| detect: False              | expect.total: 0 (no alert from any rule)                      |
| stderr_contains (fal_01_003) | expect.rejected: 1 (the malformed document is rejected)     |
| enable_source, conf_file   | dropped: every rule of the loaded files runs on the events     |

Known differences (cases that cannot pass because the shared k8s_audit_rules.yaml is newer
than the rules text the case was written for) are listed in KNOWN_DIFFERENCES with the
reason; the runner reports them as known differences, never as passes.
"""

import os
import re
import sys

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
# Suites reference the fixtures relative to the suite file.
FIXTURES = "../../../../shared/fixtures"
SOURCE = os.path.join(HERE, FIXTURES, "falco-k8s-audit", "falco_k8s_audit_tests.yaml")
OUTPUT = os.path.join(HERE, "falco_k8s_audit_tests.yaml")

RULES_MAP = {
    "BUILD_DIR/falcosecurity-rules-falco-prefix/src/falcosecurity-rules-falco/falco_rules.yaml":
        f"{FIXTURES}/falco-rules/falco_rules.yaml",
    "BUILD_DIR/k8saudit-rules-prefix/src/k8saudit-rules/k8s_audit_rules.yaml":
        f"{FIXTURES}/falco-rules/plugins/k8saudit/rules/k8s_audit_rules.yaml",
}

# case name -> reason. Found by running the converted suite against the shared rules files
# and reading the rule texts; each reason names the rule change and what was checked.
TRUST_LISTS = (
    "the rules do not load: trust_nginx_container.yaml appends nginx to the lists "
    "falco_sensitive_mount_images and falco_hostnetwork_images, and no shared rules file "
    "loaded here defines them: the newer falco_rules.yaml keeps falco_sensitive_mount_images "
    "only in falco-sandbox_rules.yaml, and the newer k8s_audit_rules.yaml names its exemption "
    "lists k8s_audit_sensitive_mount_images, k8s_audit_hostnetwork_images and "
    "k8s_audit_privileged_images. Appending to a list that is not defined is a load error, "
    "as in Falco."
)
LISTS_THEN_PASS = " With the two old lists defined before it, this case passes (checked)."
LISTS_STILL_FIRE = (
    " With the two old lists defined before it, {rule!r} still fires: the newer rule exempts "
    "images listed in {new}, not in the old list this file appends to."
)


def renamed(old, new_rules, fires):
    return (
        f"the shared, newer k8s_audit_rules.yaml has no rule {old!r}: it was split into "
        f"{' and '.join(repr(r) for r in new_rules)}; on this trace {fires!r} fires once."
    )


KNOWN_DIFFERENCES = {
    "compat_engine_v4_create_privileged_trusted_pod": TRUST_LISTS + LISTS_THEN_PASS,
    "compat_engine_v4_create_hostnetwork_trusted_pod": TRUST_LISTS + LISTS_THEN_PASS,
    "create_privileged_trusted_pod": TRUST_LISTS
    + LISTS_STILL_FIRE.format(rule="Create Privileged Pod", new="k8s_audit_privileged_images"),
    "create_unprivileged_trusted_pod": TRUST_LISTS + LISTS_THEN_PASS,
    "create_sensitive_mount_trusted_pod": TRUST_LISTS
    + LISTS_STILL_FIRE.format(
        rule="Create Sensitive Mount Pod", new="k8s_audit_sensitive_mount_images"
    ),
    "create_unsensitive_mount_trusted_pod": TRUST_LISTS + LISTS_THEN_PASS,
    "create_hostnetwork_trusted_pod": TRUST_LISTS
    + LISTS_STILL_FIRE.format(rule="Create HostNetwork Pod", new="k8s_audit_hostnetwork_images"),
    "create_nohostnetwork_trusted_pod": TRUST_LISTS + LISTS_THEN_PASS,
    "create_clusterrole": renamed(
        "K8s Role/Clusterrole Created", ["K8s Role Created", "K8s ClusterRole Created"],
        "K8s ClusterRole Created",
    ),
    "delete_clusterrole": renamed(
        "K8s Role/Clusterrole Deleted", ["K8s Role Deleted", "K8s ClusterRole Deleted"],
        "K8s ClusterRole Deleted",
    ),
    "create_clusterrolebinding": renamed(
        "K8s Role/Clusterrolebinding Created",
        ["K8s RoleBinding Created", "K8s ClusterRoleBinding Created"],
        "K8s ClusterRoleBinding Created",
    ),
    "delete_clusterrolebinding": renamed(
        "K8s Role/Clusterrolebinding Deleted",
        ["K8s RoleBinding Deleted", "K8s ClusterRoleBinding Deleted"],
        "K8s ClusterRoleBinding Deleted",
    ),
}


class MuxLoader(yaml.SafeLoader):
    """Falco's avocado test files tag the case map with `!mux`; read it as a plain map."""


MuxLoader.add_constructor(
    "!mux", lambda loader, node: loader.construct_mapping(node, deep=True)
)


def map_rules_file(path):
    if path in RULES_MAP:
        return RULES_MAP[path]
    if path.startswith("./rules/"):
        return f"{FIXTURES}/falco-k8s-audit/{path[2:]}"
    sys.exit(f"convert.py: unmapped rules file {path!r}")


def trace_file(opts):
    m = re.search(r"open_params=(trace_files/\S+)", opts or "")
    if not m:
        sys.exit(f"convert.py: no trace file in {opts!r}")
    return f"{FIXTURES}/falco-k8s-audit/{m.group(1)}"


def convert_case(name, case):
    out = {"name": name}
    if name in KNOWN_DIFFERENCES:
        out["known_difference"] = KNOWN_DIFFERENCES[name]
    out["rules"] = [map_rules_file(p) for p in case["rules_file"]]
    out["inputs"] = [trace_file(case.get("addl_cmdline_opts"))]
    expect = {}
    if case.get("detect"):
        counts = {}
        for item in case.get("detect_counts") or []:
            counts.update(item)
        if not counts:
            sys.exit(f"convert.py: case {name} detects without detect_counts")
        expect["hits"] = counts
        level = case.get("detect_level")
        if level:
            expect["priorities"] = level if isinstance(level, list) else [level]
    else:
        expect["total"] = 0
    if "stderr_contains" in case:
        expect["rejected"] = 1
    out["expect"] = expect
    return out


def main():
    with open(SOURCE) as f:
        doc = yaml.load(f, Loader=MuxLoader)
    cases = [convert_case(n, c) for n, c in doc["trace_files"].items()]
    unknown = set(KNOWN_DIFFERENCES) - {c["name"] for c in cases}
    if unknown:
        sys.exit(f"convert.py: known differences for unknown cases {sorted(unknown)}")
    header = (
        "# Generated by convert.py from falco 0.34.1 test/falco_k8s_audit_tests.yaml\n"
        f"# ({len(cases)} cases). Run: tether policy test tests/suites/falco-k8s-audit/falco_k8s_audit_tests.yaml\n"
    )
    suite = {
        "name": "falco k8s-audit tests (falco 0.34.1)",
        "cases": cases,
    }
    body = yaml.safe_dump(suite, sort_keys=False, width=200, allow_unicode=True)
    with open(OUTPUT, "w") as f:
        f.write(header + body)
    print(f"wrote {len(cases)} cases to {os.path.relpath(OUTPUT)}")


if __name__ == "__main__":
    main()
