#!/usr/bin/env python3
"""Generates the suites of tests/suites/library/.

falco-before-admission.yaml: Falco's own k8s_audit trace files
run through the bundled library twice — as the audit events they are, and rewritten into the
AdmissionReview the API server would have sent to a validating webhook for the same request —
so that each Falco rule (audit) and its counterpart in 50-falco-k8s-audit-admission.yaml
(admission) are shown to agree, and the Pod Security rules are shown to run on both; plus
admission-only RBAC cases (RoleBindings to cluster-admin, updates) that Falco's audit rules do
not cover.

pod-security.yaml: the Pod Security rules beyond Kyverno's CREATE cases: updates (a
metadata-only update is skipped, a spec change is evaluated), subresources (ephemeral
containers are evaluated, status is not), DELETE, the API server's captured pod CREATE, and
scoped enforcement as README.md describes it.

exec-control.yaml: the exec-control rules (30-exec-control.yaml) on the API server captures
of exec CONNECT reviews (POST and WebSocket GET) and audit events, and on the requests of
Kyverno's exec-blocking examples (block-pod-exec-by-namespace, block-pod-exec-by-pod-name,
block-kubectl-cp), each as the CONNECT review the API server sends for it.

    python3 tests/suites/gen_library_suites.py [FIXTURES_DIR]

FIXTURES_DIR defaults to ../shared/fixtures beside the workspace root. The generated files are
committed; run this again when the tables below change.
"""

import json
import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
OUT = os.path.join(HERE, "library", "falco-before-admission.yaml")
EXEC_OUT = os.path.join(HERE, "library", "exec-control.yaml")
PSS_OUT = os.path.join(HERE, "library", "pod-security.yaml")
CAPTURES = "apiserver-captures"
LIBRARY = os.path.join(ROOT, "policies", "library")
TRACES = "falco-k8s-audit/trace_files/k8s_audit"

PRIV = "Create Privileged Pod"
PRIV_ADM = "Create Privileged Pod Before Admission"
PSS_PRIV = "Pod Security Baseline Privileged Container"
HOSTNET = "Create HostNetwork Pod"
HOSTNET_ADM = "Create HostNetwork Pod Before Admission"
PSS_HOSTNS = "Pod Security Baseline Host Namespaces"
MOUNT = "Create Sensitive Mount Pod"
MOUNT_ADM = "Create Sensitive Mount Pod Before Admission"
PSS_HOSTPATH = "Pod Security Baseline HostPath Volume"
WILD = "ClusterRole With Wildcard Created"
WILD_ADM = "ClusterRole With Wildcard Before Admission"
EXEC_ROLE = "ClusterRole With Pod Exec Created"
EXEC_ROLE_ADM = "ClusterRole With Pod Exec Before Admission"
ADMIN = "Attach to cluster-admin Role"
ADMIN_ADM = "Attach to cluster-admin Role Before Admission"
PSS_NONROOT = "Pod Security Restricted Running As Non-root"


def pod(priv=0, hostnet=0, mount=0):
    """Expected hits for a pod trace: (audit, admission)."""
    audit = {PRIV: priv, PSS_PRIV: priv, HOSTNET: hostnet, PSS_HOSTNS: hostnet,
             MOUNT: mount, PSS_HOSTPATH: mount}
    adm = {PRIV_ADM: priv, PSS_PRIV: priv, HOSTNET_ADM: hostnet, PSS_HOSTNS: hostnet,
           MOUNT_ADM: mount, PSS_HOSTPATH: mount,
           # Falco's rules are audit rules: they never run on an AdmissionReview.
           PRIV: 0, HOSTNET: 0, MOUNT: 0}
    return audit, adm


def rbac(wild=0, exec_role=0, admin=0):
    audit = {WILD: wild, EXEC_ROLE: exec_role, ADMIN: admin}
    adm = {WILD_ADM: wild, EXEC_ROLE_ADM: exec_role, ADMIN_ADM: admin, WILD: 0, EXEC_ROLE: 0,
           ADMIN: 0}
    return audit, adm


# trace file -> (expected hits on the audit event, expected hits on the AdmissionReview);
# the Falco rules' counts are those of Falco's falco_k8s_audit_tests.yaml for the same file.
TABLE = {
    "create_nginx_pod_privileged.json": pod(priv=1),
    "create_nginx_pod_privileged_2nd_container.json": pod(priv=1),
    "create_nginx_pod_no_secctx_1st_container_privileged_2nd_container.json": pod(priv=1),
    "create_nginx_pod_unprivileged.json": pod(),
    "create_nginx_pod_hostnetwork.json": pod(hostnet=1),
    "create_nginx_pod_nohostnetwork.json": pod(),
    "create_nginx_pod_sensitive_mount.json": pod(mount=1),
    "create_nginx_pod_sensitive_mount_2nd_container.json": pod(mount=1),
    "create_cluster_role_wildcard_resources.json": rbac(wild=1),
    "create_cluster_role_wildcard_verbs.json": rbac(wild=1),
    "create_cluster_role_pod_exec.json": rbac(exec_role=1),
    "create_clusterrole.json": rbac(),
    "attach_cluster_admin_role.json": rbac(admin=1),
    "create_clusterrolebinding.json": rbac(),
    # A Deployment: the workload template is read at admission and in the audit event.
    "create_deployment.json": ({PSS_PRIV: 0, PSS_NONROOT: 1}, {PSS_PRIV: 0, PSS_NONROOT: 1}),
}


def events(path):
    with open(path) as f:
        text = f.read()
    try:
        doc = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(doc, list):
        return doc
    return doc.get("items", [doc])


def admission_review(ev):
    """The AdmissionReview a validating webhook receives for the request of audit event `ev`."""
    ref = ev["objectRef"]
    obj = ev["requestObject"]
    group = ref.get("apiGroup", "")
    version = ref.get("apiVersion", "v1")
    api_version = obj.get("apiVersion", version)
    gvk = {"group": group, "version": api_version.split("/")[-1], "kind": obj["kind"]}
    gvr = {"group": group, "version": version, "resource": ref["resource"]}
    request = {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, "tether/falco/" + ev["auditID"])),
        "kind": gvk,
        "resource": gvr,
        "requestKind": gvk,
        "requestResource": gvr,
        "operation": ev["verb"].upper(),
        "userInfo": ev["user"],
        "object": obj,
        "oldObject": None,
        "dryRun": False,
        "options": {"kind": "CreateOptions", "apiVersion": "meta.k8s.io/v1"},
    }
    if ref.get("name"):
        request["name"] = ref["name"]
    if ref.get("namespace"):
        request["namespace"] = ref["namespace"]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def main():
    fixtures = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
        os.path.dirname(ROOT), "shared", "fixtures")
    library = sorted(f for f in os.listdir(LIBRARY) if f.endswith(".yaml"))
    rel_fixtures = "../../../../shared/fixtures"
    lines = [
        "# Generated by tests/suites/gen_library_suites.py. Do not edit: change the generator",
        "# and run it again.",
        "name: Falco k8s_audit rules on audit events and their admission counterparts",
        "rules:",
    ] + [f"  - ../../../policies/library/{f}" for f in library] + ["cases:"]
    for trace, (audit, adm) in TABLE.items():
        path = os.path.join(fixtures, TRACES, trace)
        evs = [e for e in events(path) if "requestObject" in e]
        if len(evs) != 1:
            sys.exit(f"{path}: expected one event with a requestObject, found {len(evs)}")
        lines += [
            f"  - name: {json.dumps(trace + ' as an audit event')}",
            "    inputs:",
            f"      - {rel_fixtures}/{TRACES}/{trace}",
            "    expect:",
            "      hits: {" + ", ".join(f"{json.dumps(r)}: {n}" for r, n in audit.items()) + "}",
            f"  - name: {json.dumps(trace + ' as an AdmissionReview')}",
            "    inputs:",
            "      - json: " + json.dumps(admission_review(evs[0]), separators=(", ", ": ")),
            "    expect:",
            "      hits: {" + ", ".join(f"{json.dumps(r)}: {n}" for r, n in adm.items()) + "}",
            "      decision: allow",
        ]
    extra = rbac_cases()
    for name, doc, hits in extra:
        lines += [
            f"  - name: {json.dumps(name)}",
            "    inputs:",
            "      - json: " + json.dumps(doc, separators=(", ", ": ")),
            "    expect:",
            "      hits: {" + ", ".join(f"{json.dumps(r)}: {n}" for r, n in hits.items()) + "}",
            "      decision: allow",
        ]
    with open(OUT, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{os.path.relpath(OUT, ROOT)}: {2 * len(TABLE) + len(extra)} cases")
    write_suite(EXEC_OUT, "exec control (30-exec-control.yaml)", exec_cases(), library)
    write_suite(PSS_OUT, "pod security rules on updates, subresources and scopes", pss_cases(),
                library)


def rbac_review(op, resource, obj, ns=None):
    gvk = {"group": "rbac.authorization.k8s.io", "version": "v1", "kind": obj["kind"]}
    gvr = {"group": "rbac.authorization.k8s.io", "version": "v1", "resource": resource}
    request = {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tether/rbac/{op}/{json.dumps(obj)}")),
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": obj["metadata"]["name"], "operation": op,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": obj, "oldObject": None, "dryRun": False,
        "options": {"kind": "CreateOptions" if op == "CREATE" else "UpdateOptions",
                    "apiVersion": "meta.k8s.io/v1"}}
    if ns:
        request["namespace"] = ns
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": request}


def rbac_cases():
    """Admission-only cases: what Falco's audit rules do not cover."""
    def binding(kind, role_kind, role, ns=None):
        meta = {"name": "ops-admin"}
        if ns:
            meta["namespace"] = ns
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind, "metadata": meta,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind,
                            "name": role},
                "subjects": [{"kind": "User", "name": "bob",
                              "apiGroup": "rbac.authorization.k8s.io"}]}
    wildcard = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "reader"},
                "rules": [{"apiGroups": [""], "resources": ["*"], "verbs": ["get"]}]}
    attach = {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
              "metadata": {"name": "debugger", "namespace": "team-a"},
              "rules": [{"apiGroups": [""], "resources": ["pods/attach"], "verbs": ["create"]}]}
    return [
        ("a RoleBinding to the cluster-admin ClusterRole",
         rbac_review("CREATE", "rolebindings", binding("RoleBinding", "ClusterRole", "cluster-admin", "team-a"), "team-a"),
         {ADMIN_ADM: 1}),
        ("a RoleBinding to a Role that happens to be named cluster-admin",
         rbac_review("CREATE", "rolebindings", binding("RoleBinding", "Role", "cluster-admin", "team-a"), "team-a"),
         {ADMIN_ADM: 0}),
        ("an update of a ClusterRoleBinding to point at cluster-admin",
         rbac_review("UPDATE", "clusterrolebindings", binding("ClusterRoleBinding", "ClusterRole", "cluster-admin")),
         {ADMIN_ADM: 1}),
        ("an update of a ClusterRole that adds a wildcard resource",
         rbac_review("UPDATE", "clusterroles", wildcard), {WILD_ADM: 1}),
        ("a Role that can attach to pods", rbac_review("CREATE", "roles", attach, "team-a"),
         {EXEC_ROLE_ADM: 1, WILD_ADM: 0}),
    ]


NS_RULE = "Exec Into Protected Namespace"
POD_RULE = "Exec Into Protected Pod"
LABEL_RULE = "Exec Into Labelled Protected Pod"
CP_RULE = "Copy To Or From Pod"
FALCO_EXEC = "Attach/Exec Pod"
DEBUG_USER = {"username": "dev-user", "uid": "dev-user-uid", "groups": ["developers", "system:authenticated"]}

OPTION_KINDS = {"exec": "PodExecOptions", "attach": "PodAttachOptions",
                "portforward": "PodPortForwardOptions"}


def connect_review(ns, pod, sub="exec", command=None):
    """A CONNECT review shaped like the API server's capture
    (apiserver-captures/admission-pod-exec-connect-post-stdin-sh.json)."""
    kind = OPTION_KINDS[sub]
    gvk = {"group": "", "version": "v1", "kind": kind}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    obj = {"kind": kind, "apiVersion": "v1"}
    if sub == "exec":
        obj.update({"stdout": True, "stderr": True, "container": "busybox", "command": command})
    elif sub == "attach":
        obj.update({"stdin": True, "stdout": True, "container": "busybox"})
    else:
        obj.update({"ports": [8080]})
    uid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"tether/exec/{ns}/{pod}/{sub}/{command}"))
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {
        "uid": uid, "kind": gvk, "resource": gvr, "subResource": sub, "requestKind": gvk,
        "requestResource": gvr, "requestSubResource": sub, "name": pod, "namespace": ns,
        "operation": "CONNECT", "userInfo": DEBUG_USER, "object": obj, "oldObject": None,
        "dryRun": False, "options": None}}


def labelled(review, labels):
    """A review as the webhook evaluates it once its cluster view found the target pod:
    the pod's labels presented as the object's `metadata.labels`."""
    review = json.loads(json.dumps(review))
    obj = review["request"]["object"]
    obj.setdefault("metadata", {})["labels"] = labels
    return review


def debug_review(ns, pod, labels=None):
    """`kubectl debug`: an UPDATE of pods/ephemeralcontainers carrying the whole pod."""
    gvk = {"group": "", "version": "v1", "kind": "Pod"}
    gvr = {"group": "", "version": "v1", "resource": "pods"}
    container = {"name": "busybox", "image": "busybox:1.35", "command": ["sleep", "300"]}
    old = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": pod, "namespace": ns},
           "spec": {"containers": [container]}}
    if labels:
        old["metadata"]["labels"] = labels
    new = json.loads(json.dumps(old))
    new["spec"]["ephemeralContainers"] = [{"name": "debugger", "image": "busybox:1.35",
                                           "stdin": True, "tty": True}]
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tether/debug/{ns}/{pod}")),
        "kind": gvk, "resource": gvr, "subResource": "ephemeralcontainers", "requestKind": gvk,
        "requestResource": gvr, "requestSubResource": "ephemeralcontainers", "name": pod,
        "namespace": ns, "operation": "UPDATE", "userInfo": DEBUG_USER, "object": new,
        "oldObject": old, "dryRun": False,
        "options": {"kind": "UpdateOptions", "apiVersion": "meta.k8s.io/v1"}}}


def audit_exec(ns, pod, command):
    """The audit event of an exec (stage ResponseStarted), shaped like the API server's
    capture (apiserver-captures/audit-audit-log-pods-exec-RequestResponse.jsonl)."""
    query = "&".join("command=" + c for c in command) + "&stdout=true&container=busybox"
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
            "auditID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tether/audit/{ns}/{pod}/{command}")),
            "stage": "ResponseStarted",
            "requestURI": f"/api/v1/namespaces/{ns}/pods/{pod}/exec?{query}",
            "verb": "create", "user": DEBUG_USER, "sourceIPs": ["10.0.0.7"],
            "userAgent": "kubectl/v1.28.0", "objectRef": {
                "resource": "pods", "namespace": ns, "name": pod, "apiVersion": "v1",
                "subresource": "exec"},
            "responseStatus": {"metadata": {}, "code": 101},
            "requestReceivedTimestamp": "2026-11-22T10:18:57.347954Z",
            "stageTimestamp": "2026-11-22T10:18:57.394115Z"}


def exec_cases():
    """(name, extra rules files, input lines, hits, decision)"""
    cap = "../../../../shared/fixtures/" + CAPTURES
    post = [f"      - {cap}/admission-pod-exec-connect-post-stdin-sh.json"]
    ws = [f"      - {cap}/admission-pod-exec-connect-websocket-get.json"]
    audit_log = [f"      - {cap}/audit-audit-log-pods-exec-RequestResponse.jsonl"]
    event_list = [f"      - {cap}/audit-webhook-eventlist-with-exec-events.json"]
    none = {NS_RULE: 0, POD_RULE: 0, LABEL_RULE: 0, CP_RULE: 0}

    def inline(doc):
        return ["      - json: " + json.dumps(doc, separators=(", ", ": "))]

    protect_default = ["protect-default-namespace.yaml"]
    pci = ["protect-pci-namespace.yaml"]
    names = ["protect-maintenance-pods.yaml"]
    return [
        # The captures, with nothing protected (the library's default).
        ("captured exec CONNECT via POST, nothing protected", [], post, none, "allow"),
        ("captured exec CONNECT via WebSocket GET, nothing protected", [], ws, none, "allow"),
        # The captures, with their namespace protected.
        ("captured exec CONNECT via POST into a protected namespace", protect_default, post,
         {NS_RULE: 1, POD_RULE: 0, CP_RULE: 0}, "deny"),
        ("captured exec CONNECT via WebSocket GET into a protected namespace", protect_default,
         ws, {NS_RULE: 1, POD_RULE: 0, CP_RULE: 0}, "deny"),
        ("captured exec CONNECT by a break-glass group member",
         protect_default + ["break-glass-masters.yaml"], post + ws, none, "allow"),
        # The audit side of the same requests: every exec (ResponseStarted, verb create for
        # SPDY, get for WebSocket) is reported, as Falco's Attach/Exec Pod reports it.
        ("captured audit log of execs into a protected namespace", protect_default, audit_log,
         {NS_RULE: 5, FALCO_EXEC: 5, CP_RULE: 0}, None),
        ("captured audit EventList of execs into a protected namespace", protect_default,
         event_list, {NS_RULE: 3, FALCO_EXEC: 3, CP_RULE: 0}, None),
        ("captured audit log, nothing protected", [], audit_log,
         {NS_RULE: 0, FALCO_EXEC: 5}, None),
        # Kyverno block-pod-exec-by-namespace: `kubectl exec -n pci pod02 -- ls` and
        # `kubectl exec -n pci deploy/deployment01 -- ls` fail, the same in
        # block-pod-exec-ns succeed.
        ("kyverno block-pod-exec-by-namespace: exec into pci/pod02", pci,
         inline(connect_review("pci", "pod02", command=["ls"])), {NS_RULE: 1}, "deny"),
        ("kyverno block-pod-exec-by-namespace: exec into a pod of pci/deployment01", pci,
         inline(connect_review("pci", "deployment01-6d8f7c9b5-x2k4q", command=["ls"])),
         {NS_RULE: 1}, "deny"),
        ("kyverno block-pod-exec-by-namespace: exec into block-pod-exec-ns/pod01", pci,
         inline(connect_review("block-pod-exec-ns", "pod01", command=["ls"])), {NS_RULE: 0},
         "allow"),
        ("kyverno block-pod-exec-by-namespace: exec into a pod of block-pod-exec-ns/deployment02",
         pci, inline(connect_review("block-pod-exec-ns", "deployment02-7c5d4b8f9-m3n7p",
                                    command=["ls"])), {NS_RULE: 0}, "allow"),
        ("attach into a protected namespace", pci,
         inline(connect_review("pci", "pod02", sub="attach")), {NS_RULE: 1, CP_RULE: 0}, "deny"),
        ("port-forward into a protected namespace", pci,
         inline(connect_review("pci", "pod02", sub="portforward")), {NS_RULE: 1, CP_RULE: 0},
         "deny"),
        ("kubectl debug into a protected namespace", pci, inline(debug_review("pci", "pod02")),
         {NS_RULE: 1}, "deny"),
        ("kubectl debug outside protected namespaces", pci,
         inline(debug_review("block-pod-exec-ns", "pod01")), {NS_RULE: 0}, "allow"),
        ("audit event of an exec into a protected namespace", pci,
         inline(audit_exec("pci", "pod02", ["ls"])), {NS_RULE: 1, FALCO_EXEC: 1}, None),
        # Kyverno block-pod-exec-by-pod-name: myapp-maintenance-* are protected.
        ("kyverno block-pod-exec-by-pod-name: exec into myapp-maintenance-01", names,
         inline(connect_review("bpe-podname-ns", "myapp-maintenance-01", command=["ls"])),
         {POD_RULE: 1, NS_RULE: 0}, "deny"),
        ("kyverno block-pod-exec-by-pod-name: exec into myapp-maintenance-02", names,
         inline(connect_review("bpe-podname-ns", "myapp-maintenance-02", command=["ls"])),
         {POD_RULE: 1, NS_RULE: 0}, "deny"),
        ("kyverno block-pod-exec-by-pod-name: exec into not-myapp", names,
         inline(connect_review("bpe-podname-ns", "not-myapp", command=["ls"])),
         {POD_RULE: 0, NS_RULE: 0}, "allow"),
        # Protection by pod label: the webhook presents the target pod's labels (looked up
        # through its cluster view) as the object's labels.
        ("exec into a pod labelled tether.io/protected=true", [],
         inline(labelled(connect_review("vault", "vault-0", command=["sh"]),
                         {"app": "vault", "tether.io/protected": "true"})),
         {LABEL_RULE: 1, NS_RULE: 0, POD_RULE: 0}, "deny"),
        ("attach into a pod labelled tether.io/protected=true", [],
         inline(labelled(connect_review("vault", "vault-0", sub="attach"),
                         {"tether.io/protected": "true"})),
         {LABEL_RULE: 1}, "deny"),
        ("exec into a pod labelled tether.io/protected=false", [],
         inline(labelled(connect_review("vault", "vault-0", command=["sh"]),
                         {"tether.io/protected": "false"})),
         {LABEL_RULE: 0}, "allow"),
        ("exec into a pod whose labels are unknown (no cluster view)", [],
         inline(connect_review("vault", "vault-0", command=["sh"])), {LABEL_RULE: 0}, "allow"),
        ("exec into a labelled protected pod by a break-glass user", ["break-glass-dev-user.yaml"],
         inline(labelled(connect_review("vault", "vault-0", command=["sh"]),
                         {"tether.io/protected": "true"})),
         {LABEL_RULE: 0}, "allow"),
        ("kubectl debug into a labelled protected pod", [],
         inline(debug_review("vault", "vault-0", labels={"tether.io/protected": "true"})),
         {LABEL_RULE: 1}, "deny"),
        ("audit event of an exec: no labels, the label rule cannot fire", [],
         inline(audit_exec("vault", "vault-0", ["sh"])), {LABEL_RULE: 0, FALCO_EXEC: 1}, None),
        # Kyverno block-kubectl-cp: `kubectl cp -n bkc-podlabel-ns pod01:/test1.txt ./test1.txt`
        # runs `tar cf - /test1.txt`; copying in runs `tar xmf - -C DIR`.
        ("kubectl cp out of a pod is reported (detect)", [],
         inline(connect_review("bkc-podlabel-ns", "pod01", command=["tar", "cf", "-", "/test1.txt"])),
         {CP_RULE: 1}, "allow"),
        ("kubectl cp into a pod is reported (detect)", [],
         inline(connect_review("bkc-podlabel-ns", "pod01", command=["tar", "xmf", "-", "-C", "/tmp"])),
         {CP_RULE: 1}, "allow"),
        ("kyverno block-kubectl-cp: kubectl cp out of a pod is denied in enforce mode",
         ["enforce-kubectl-cp.yaml"],
         inline(connect_review("bkc-podlabel-ns", "pod01", command=["tar", "cf", "-", "/test1.txt"])),
         {CP_RULE: 1}, "deny"),
        ("an exec that is not kubectl cp is not reported as one", ["enforce-kubectl-cp.yaml"],
         inline(connect_review("bkc-podlabel-ns", "pod01", command=["ls", "/"])), {CP_RULE: 0},
         "allow"),
        ("an exec that runs tar later in its command is not kubectl cp", [],
         inline(connect_review("bkc-podlabel-ns", "pod01", command=["sh", "-c", "tar cf - /"])),
         {CP_RULE: 0}, "allow"),
        ("audit event of kubectl cp", [],
         inline(audit_exec("bkc-podlabel-ns", "pod01", ["tar", "cf", "-", "/test1.txt"])),
         {CP_RULE: 1, FALCO_EXEC: 1}, None),
        ("audit event of an exec whose command only contains tar later", [],
         inline(audit_exec("bkc-podlabel-ns", "pod01", ["busybox", "tar", "cf", "-", "/"])),
         {CP_RULE: 0, FALCO_EXEC: 1}, None),
    ]


def review(op, resource, obj, old=None, sub=None, ns="default"):
    """An AdmissionReview for `obj` (a Pod, Deployment, ...)."""
    group, _, version = obj["apiVersion"].rpartition("/")
    gvk = {"group": group, "version": version, "kind": obj["kind"]}
    gvr = {"group": group, "version": version, "resource": resource}
    name = obj["metadata"]["name"]
    request = {
        "uid": str(uuid.uuid5(uuid.NAMESPACE_URL, f"tether/pss/{op}/{resource}/{sub}/{ns}/{name}/{json.dumps(obj)}")),
        "kind": gvk, "resource": gvr, "requestKind": gvk, "requestResource": gvr,
        "name": name, "namespace": ns, "operation": op, "userInfo": DEBUG_USER,
        "object": obj if op != "DELETE" else None, "oldObject": old, "dryRun": False,
        "options": {"kind": {"CREATE": "CreateOptions", "UPDATE": "UpdateOptions",
                             "DELETE": "DeleteOptions"}[op], "apiVersion": "meta.k8s.io/v1"}}
    if sub:
        request["subResource"] = sub
        request["requestSubResource"] = sub
    return {"kind": "AdmissionReview", "apiVersion": "admission.k8s.io/v1", "request": request}


def privileged_pod(ns="default", image="nginx:1.25", labels=None):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "priv", "namespace": ns, "labels": labels or {"app": "priv"}},
            "spec": {"containers": [{"name": "c", "image": image,
                                     "securityContext": {"privileged": True}}]}}


def plain_pod(ns="default"):
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "plain", "namespace": ns},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}]}}


def deployment(privileged):
    ctx = {"privileged": True} if privileged else {}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "c", "image": "nginx:1.25",
                                                           "securityContext": ctx}]}}}}


def pss_cases():
    """(name, extra rules files, input lines, hits, decision)"""
    def inline(doc):
        return ["      - json: " + json.dumps(doc, separators=(", ", ": "))]

    def both(n):
        return {PSS_PRIV: n, PRIV_ADM: n}
    relabelled = privileged_pod(labels={"app": "priv", "tier": "backend"})
    finalized = privileged_pod()
    finalized["metadata"]["finalizers"] = ["example.com/cleanup"]
    new_image = privileged_pod(image="nginx:1.26")
    debug_old = plain_pod()
    debug_new = plain_pod()
    debug_new["spec"]["ephemeralContainers"] = [
        {"name": "debugger", "image": "busybox:1.35", "securityContext": {"privileged": True}}]
    cap = "../../../../shared/fixtures/" + CAPTURES
    restricted_none = {r: 0 for r in (
        "Pod Security Baseline HostProcess", "Pod Security Baseline Host Namespaces", PSS_PRIV,
        "Pod Security Baseline Capabilities", PSS_HOSTPATH, "Pod Security Baseline Host Ports",
        "Pod Security Baseline AppArmor", "Pod Security Baseline SELinux Type",
        "Pod Security Baseline SELinux User Or Role", "Pod Security Baseline Proc Mount",
        "Pod Security Baseline Seccomp", "Pod Security Baseline Sysctls")}
    enforce = ["enforce-privileged-in-staging.yaml"]
    return [
        ("create of a privileged pod", [], inline(review("CREATE", "pods", privileged_pod())),
         both(1), "allow"),
        ("update that only changes labels is skipped", [],
         inline(review("UPDATE", "pods", relabelled, old=privileged_pod())), both(0), "allow"),
        ("update that only adds a finalizer is skipped, even in enforce mode", enforce,
         inline(review("UPDATE", "pods", finalized, old=privileged_pod(), ns="staging-a")),
         both(0), "allow"),
        ("update that changes the image is evaluated", [],
         inline(review("UPDATE", "pods", new_image, old=privileged_pod())), both(1), "allow"),
        ("update of a deployment template to privileged is evaluated", [],
         inline(review("UPDATE", "deployments", deployment(True), old=deployment(False))),
         both(1), "allow"),
        ("update of a deployment that keeps a compliant template", [],
         inline(review("UPDATE", "deployments", deployment(False), old=deployment(False))),
         both(0), "allow"),
        ("kubectl debug adding a privileged ephemeral container is evaluated", [],
         inline(review("UPDATE", "pods", debug_new, old=debug_old, sub="ephemeralcontainers")),
         {PSS_PRIV: 1, PRIV_ADM: 1, "EphemeralContainers Created Before Admission": 1}, "allow"),
        ("status update of a privileged pod is not a pod spec write", [],
         inline(review("UPDATE", "pods", privileged_pod(), old=privileged_pod(), sub="status")),
         both(0), "allow"),
        ("delete of a privileged pod", [],
         inline(review("DELETE", "pods", privileged_pod(), old=privileged_pod())), both(0),
         "allow"),
        ("captured pod create: baseline compliant, not restricted", [],
         [f"      - {cap}/admission-pod-create-good-pod-allowed.json"],
         dict(restricted_none, **{
             "Pod Security Restricted Volume Types": 0,
             "Pod Security Restricted Privilege Escalation": 1,
             "Pod Security Restricted Running As Non-root": 1,
             "Pod Security Restricted Running As Non-root User": 0,
             "Pod Security Restricted Seccomp": 1,
             "Pod Security Restricted Capabilities Drop All": 1,
             "Pod Security Restricted Capabilities Add": 0}), "allow"),
        ("enforce scoped to staging-*: denied in staging-a", enforce,
         inline(review("CREATE", "pods", privileged_pod(ns="staging-a"), ns="staging-a")),
         both(1), "deny"),
        ("enforce scoped to staging-*: detected only in prod-a", enforce,
         inline(review("CREATE", "pods", privileged_pod(ns="prod-a"), ns="prod-a")),
         both(1), "allow"),
    ]


def write_suite(path, title, cases, library):
    base = [f"../../../policies/library/{f}" for f in library]
    lines = [
        "# Generated by tests/suites/gen_library_suites.py. Do not edit: change the generator",
        "# and run it again.",
        f"name: {title}",
        "rules:",
    ] + [f"  - {r}" for r in base] + ["cases:"]
    for name, extra, inputs, hits, decision in cases:
        lines.append(f"  - name: {json.dumps(name)}")
        if extra:
            lines.append("    rules:")
            lines += [f"      - {r}" for r in base + [f"rules/{x}" for x in extra]]
        lines.append("    inputs:")
        lines += inputs
        lines.append("    expect:")
        lines.append("      hits: {" + ", ".join(f"{json.dumps(r)}: {n}" for r, n in hits.items()) + "}")
        if decision:
            lines.append(f"      decision: {decision}")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    print(f"{os.path.relpath(path, ROOT)}: {len(cases)} cases")


if __name__ == "__main__":
    main()
