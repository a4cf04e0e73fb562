#!/usr/bin/env python3
"""Generates the `tether policy test` suites in tests/suites/kyverno-pod-security/ from
Kyverno's pod-security policies and their `.kyverno-test` resources.

    python3 tests/suites/gen_kyverno_suites.py [FIXTURES_DIR]

FIXTURES_DIR defaults to ../shared/fixtures beside the workspace root. The generated files are
committed; run this again when the fixtures or the rule names change, and commit the result.

Every `.kyverno-test` resource (Pod, Deployment, CronJob) is wrapped into an AdmissionReview
(admission.k8s.io/v1, operation CREATE, the resource's group/version/kind and plural
resource, namespace `pss-test`) and becomes one case. For each Kyverno rule of the policy the
case expects the mapped bundled rule to hit once when Kyverno's result is `fail` and not at all
when it is `pass`. Every case also expects the admission decision `allow`: the bundled rules
are in detect mode.

A case whose Kyverno expectation cannot be met for a principled reason is listed in
KNOWN_DIFFERENCES below with that reason, which the runner prints; none is needed today.

Requires PyYAML.
"""

import json
import os
import sys
import uuid

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "kyverno-pod-security")
LIBRARY = os.path.join(ROOT, "policies", "library")
NAMESPACE = "pss-test"
USER = {"username": "pss-tester", "uid": "pss-tester-uid", "groups": ["system:authenticated"]}

# Kyverno (policy, rule) -> the bundled rule that implements the same control.
RULE_MAP = {
    ("disallow-capabilities", "adding-capabilities"): "Pod Security Baseline Capabilities",
    ("disallow-host-namespaces", "host-namespaces"): "Pod Security Baseline Host Namespaces",
    ("disallow-host-path", "host-path"): "Pod Security Baseline HostPath Volume",
    ("disallow-host-ports", "host-ports-none"): "Pod Security Baseline Host Ports",
    ("disallow-host-ports-range", "host-port-range"):
        "Pod Security Baseline Host Ports Outside Allowed Range",
    ("disallow-host-process", "host-process-containers"): "Pod Security Baseline HostProcess",
    ("disallow-privileged-containers", "privileged-containers"):
        "Pod Security Baseline Privileged Container",
    ("disallow-proc-mount", "check-proc-mount"): "Pod Security Baseline Proc Mount",
    ("disallow-selinux", "selinux-type"): "Pod Security Baseline SELinux Type",
    ("disallow-selinux", "selinux-user-role"): "Pod Security Baseline SELinux User Or Role",
    ("restrict-apparmor-profiles", "app-armor"): "Pod Security Baseline AppArmor",
    ("restrict-seccomp", "check-seccomp"): "Pod Security Baseline Seccomp",
    ("restrict-sysctls", "check-sysctls"): "Pod Security Baseline Sysctls",
    ("disallow-capabilities-strict", "require-drop-all"):
        "Pod Security Restricted Capabilities Drop All",
    ("disallow-capabilities-strict", "adding-capabilities-strict"):
        "Pod Security Restricted Capabilities Add",
    ("disallow-privilege-escalation", "privilege-escalation"):
        "Pod Security Restricted Privilege Escalation",
    ("require-run-as-non-root-user", "run-as-non-root-user"):
        "Pod Security Restricted Running As Non-root User",
    ("require-run-as-nonroot", "run-as-non-root"): "Pod Security Restricted Running As Non-root",
    ("restrict-seccomp-strict", "check-seccomp-strict"): "Pod Security Restricted Seccomp",
    ("restrict-volume-types", "restricted-volumes"): "Pod Security Restricted Volume Types",
}

# Rules files a policy's suite loads after the library (relative to the suite file).
EXTRA_RULES = {
    # The range variant is disabled in the library; this suite enables it.
    "disallow-host-ports-range": ["rules/enable-host-port-range.yaml"],
}

# (policy, kind, name) -> reason the Kyverno expectation is not met.
KNOWN_DIFFERENCES = {}

RESOURCES = {
    "Pod": ("", "v1", "pods"),
    "Deployment": ("apps", "v1", "deployments"),
    "CronJob": ("batch", "v1", "cronjobs"),
}


def admission_review(doc):
    kind = doc["kind"]
    group, version, plural = RESOURCES[kind]
    obj = json.loads(json.dumps(doc))
    obj.setdefault("metadata", {})["namespace"] = NAMESPACE
    name = obj["metadata"]["name"]
    gvk = {"group": group, "version": version, "kind": kind}
    gvr = {"group": group, "version": version, "resource": plural}
    return {
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tether/pss/{kind}/{name}")),
            "kind": gvk,
            "resource": gvr,
            "requestKind": gvk,
            "requestResource": gvr,
            "name": name,
            "namespace": NAMESPACE,
            "operation": "CREATE",
            "userInfo": USER,
            "object": obj,
            "oldObject": None,
            "dryRun": False,
            "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
        },
    }


def quote(s):
    return json.dumps(s)


def main():
    fixtures = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(ROOT), "shared", "fixtures")
    base = os.path.join(fixtures, "kyverno-pod-security", "pod-security")
    library = sorted(f for f in os.listdir(LIBRARY) if f.endswith(".yaml"))
    written = []
    for profile in ("baseline", "restricted"):
        for policy in sorted(os.listdir(os.path.join(base, profile))):
            test_dir = os.path.join(base, profile, policy, ".kyverno-test")
            with open(os.path.join(test_dir, "kyverno-test.yaml")) as f:
                test = yaml.safe_load(f)
            resources = {}
            order = []
            for res_file in test["resources"]:
                with open(os.path.join(test_dir, res_file)) as f:
                    for doc in yaml.safe_load_all(f):
                        if doc:
                            key = (doc["kind"], doc["metadata"]["name"])
                            resources[key] = doc
                            order.append(key)
            # (kind, name) -> {bundled rule: expected hits}
            expected = {}
            for result in test["results"]:
                rule = RULE_MAP[(result["policy"], result["rule"])]
                for name in result["resources"]:
                    key = (result["kind"], name)
                    if key not in resources:
                        sys.exit(f"{test_dir}: result names {key} but no resource has that name")
                    want = {"fail": 1, "pass": 0}[result["result"]]
                    expected.setdefault(key, {})[rule] = want
            rules = [f"../../../policies/library/{f}" for f in library]
            rules += EXTRA_RULES.get(policy, [])
            lines = [
                "# Generated by tests/suites/gen_kyverno_suites.py from",
                f"# shared/fixtures/kyverno-pod-security/pod-security/{profile}/{policy}/.kyverno-test.",
                "# Do not edit: change the generator and run it again.",
                f"name: kyverno {profile}/{policy} against the bundled library",
                "rules:",
            ] + [f"  - {r}" for r in rules] + ["cases:"]
            for key in order:
                if key not in expected:
                    continue
                kind, name = key
                verdicts = ", ".join(
                    f"{'fail' if n else 'pass'}" for n in expected[key].values())
                lines.append(f"  - name: {quote(f'{kind} {name} (kyverno: {verdicts})')}")
                reason = KNOWN_DIFFERENCES.get((policy, kind, name))
                if reason:
                    lines.append(f"    known_difference: {quote(reason)}")
                lines.append("    inputs:")
                review = json.dumps(admission_review(resources[key]), separators=(", ", ": "))
                lines.append(f"      - json: {review}")
                lines.append("    expect:")
                hits = ", ".join(f"{quote(r)}: {n}" for r, n in expected[key].items())
                lines.append(f"      hits: {{{hits}}}")
                lines.append("      decision: allow")
            path = os.path.join(OUT, f"{policy}.yaml")
            with open(path, "w") as f:
                f.write("\n".join(lines) + "\n")
            written.append((path, sum(1 for k in order if k in expected)))
    for path, n in written:
        print(f"{os.path.relpath(path, ROOT)}: {n} cases")


if __name__ == "__main__":
    main()
