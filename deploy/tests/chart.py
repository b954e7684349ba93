"""Render deploy/helm/quiver with Helm's own engine and validate what it makes.

Rendering: helm-python-sdk binds libhelm_c, a C ABI over Helm's Go SDK (v4), so
`Chart.render` is `helm template` (same engine, Sprig functions, `fail`,
`required`), without a helm binary. `helm lint` runs through the same library.

Validation, for every rendered object:
  - Kubernetes kinds: kubernetes-validate in strict mode (unknown fields fail)
    against each version in K8S_VERSIONS;
  - KEDA kinds: the openAPIV3Schema of KEDA's CRDs (vendored from KEDA v2.20.2 in
    deploy/tests/keda/), made strict the same way (an object schema that lists
    properties allows no others), with jsonschema; and each trigger's metadata
    keys against the keys KEDA v2.20.2's scaler reads (KEDA ignores unknown ones);
  - cross-object checks no schema does: selectors pick exactly their own pods,
    scale targets, claims and Secrets the chart makes exist.
Controls show the validators reject what they should: an unknown Deployment
field; a ScaledObject with a string minReplicaCount, an unknown spec field, or a
trigger key KEDA does not read (beside the same ScaledObject, valid).

Usage: chart.py CHART VALUES_DIR  -> one JSON report on stdout:
  {"helm": version, "k8s_versions": [...], "lint": {...}, "controls": {...},
   "cases": {name: {"error": str|null, "objects": [...], "problems": [...]}}}
The case "defaults" has no values file; every VALUES_DIR/*.yaml is another case.
"""

import copy
import json
import pathlib
import sys

import helm_python as helm
import jsonschema
import kubernetes_validate
import yaml

K8S_VERSIONS = ["1.30.0", "1.37.0"]
HERE = pathlib.Path(__file__).resolve().parent
KEDA_CRDS = {
    "ScaledObject": HERE / "keda" / "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": HERE / "keda" / "keda.sh_triggerauthentications.yaml",
}
# The trigger metadata keys KEDA v2.20.2 reads (pkg/scalers/redis_streams_scaler.go
# with the redisConnectionInfo of redis_scaler.go; prometheus_scaler.go).
KEDA_TRIGGER_KEYS = {
    "redis-streams": {
        "pendingEntriesCount", "streamLength", "lagCount", "stream", "consumerGroup",
        "databaseIndex", "activationLagCount", "enableTLS", "address", "addresses",
        "username", "password", "sentinelUsername", "sentinelPassword",
        "sentinelMaster", "host", "hosts", "port", "ports", "unsafeSsl",
    },
    "prometheus": {
        "serverAddress", "query", "queryParameters", "threshold",
        "activationThreshold", "namespace", "customHeaders", "ignoreNullValues",
        "unsafeSsl", "awsRegion", "timeout", "identityOwner",
    },
}
RELEASE, NAMESPACE = "q", "quiver"


def strict(schema):
    """An object schema that lists properties and says nothing of others allows none
    (what the API server's strict field validation does)."""
    if isinstance(schema, dict):
        if (
            "properties" in schema
            and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")
        ):
            schema["additionalProperties"] = False
        for v in schema.values():
            strict(v)
    elif isinstance(schema, list):
        for v in schema:
            strict(v)
    return schema


def keda_schemas():
    out = {}
    for kind, path in KEDA_CRDS.items():
        crd = next(d for d in yaml.safe_load_all(path.read_text()) if d)
        (version,) = [v for v in crd["spec"]["versions"] if v.get("storage")]
        schema = strict(copy.deepcopy(version["schema"]["openAPIV3Schema"]))
        api = f'{crd["spec"]["group"]}/{version["name"]}'
        out[kind] = (api, jsonschema.Draft7Validator(schema))
    return out


KEDA = keda_schemas()


def validate(obj):
    """Problems with one object (empty: valid)."""
    kind = obj.get("kind")
    if kind in KEDA:
        api, validator = KEDA[kind]
        problems = [] if obj.get("apiVersion") == api else [f"apiVersion is not {api}"]
        problems += [
            f"/{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(obj)
        ]
        for t in obj.get("spec", {}).get("triggers", []) if kind == "ScaledObject" else []:
            known = KEDA_TRIGGER_KEYS.get(t.get("type"))
            if known is None:
                problems.append(f"trigger type {t.get('type')} is not one this check knows")
                continue
            unknown = set(t.get("metadata", {})) - known
            if unknown:
                problems.append(f"{t['type']} trigger: KEDA reads no {sorted(unknown)}")
        return problems
    problems = []
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = "/".join(map(str, e.absolute_path))
            problems.append(f"k8s {version}: /{path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            problems.append(f"k8s {version}: no schema: {e}")
    return problems


def pod_labels(o):
    return o["spec"]["template"]["metadata"].get("labels", {})


def matches(selector, labels):
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def cross_checks(objs, values):
    problems = []
    by_kind = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    deployments = by_kind.get("Deployment", {})
    for name, d in deployments.items():
        sel = d["spec"]["selector"]["matchLabels"]
        if not matches(sel, pod_labels(d)):
            problems.append(f"Deployment {name}: its selector misses its own pods")
        for other, o in deployments.items():
            if other != name and matches(sel, pod_labels(o)):
                problems.append(f"Deployment {name}: its selector also picks {other}'s pods")
        spec = d["spec"]["template"]["spec"]
        for v in spec.get("volumes", []):
            claim = v.get("persistentVolumeClaim", {}).get("claimName")
            existing = values.get("persistence", {}).get("existingClaim")
            if claim and claim not in by_kind.get("PersistentVolumeClaim", {}) and claim != existing:
                problems.append(f"Deployment {name}: claim {claim} is not rendered")
        sa = spec.get("serviceAccountName")
        if sa and sa not in by_kind.get("ServiceAccount", {}):
            problems.append(f"Deployment {name}: service account {sa} is not rendered")
    for name, s in by_kind.get("Service", {}).items():
        picked = [d for d, o in deployments.items() if matches(s["spec"]["selector"], pod_labels(o))]
        if len(picked) != 1:
            problems.append(f"Service {name} selects the pods of {picked}, not exactly one Deployment")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for name, o in by_kind.get(kind, {}).items():
            target = o["spec"]["scaleTargetRef"]["name"]
            if target not in deployments:
                problems.append(f"{kind} {name}: target {target} is not rendered")
    for name, o in by_kind.get("ScaledObject", {}).items():
        for t in o["spec"]["triggers"]:
            ref = t.get("authenticationRef", {}).get("name")
            if ref and ref not in by_kind.get("TriggerAuthentication", {}):
                problems.append(f"ScaledObject {name}: TriggerAuthentication {ref} is not rendered")
    return problems


def render(values):
    with helm.Chart.load(CHART) as chart:
        rendered = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objs = []
    for template, text in sorted(rendered.items()):
        if not template.endswith((".yaml", ".yml")):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                objs.append({"template": template, "object": doc})
    return objs


def case(values):
    try:
        objs = render(values)
    except helm.HelmError as e:
        return {"error": str(e), "objects": [], "problems": []}
    problems = []
    for o in objs:
        o["problems"] = validate(o["object"])
        problems += [f'{o["object"]["kind"]}/{o["object"]["metadata"]["name"]}: {p}' for p in o["problems"]]
    problems += cross_checks([o["object"] for o in objs], values)
    return {"error": None, "objects": objs, "problems": problems}


def controls(defaults):
    """The validators themselves must reject bad objects, or a pass means nothing."""
    deployment = next(o["object"] for o in defaults["objects"] if o["object"]["kind"] == "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    scaled = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "minReplicaCount": 0,
                 "triggers": [{"type": "redis-streams", "metadata": {"stream": "s", "lagCount": "1"}}]},
    }
    wrong_type = copy.deepcopy(scaled)
    wrong_type["spec"]["minReplicaCount"] = "zero"
    unknown = copy.deepcopy(scaled)
    unknown["spec"]["scaleTargetRefs"] = {}
    unknown_key = copy.deepcopy(scaled)
    unknown_key["spec"]["triggers"][0]["metadata"] = {"stream": "s", "lagcount": "1"}
    return {
        "k8s_unknown_field": validate(bad),
        "keda_valid": validate(scaled),
        "keda_wrong_type": validate(wrong_type),
        "keda_unknown_field": validate(unknown),
        "keda_unknown_trigger_key": validate(unknown_key),
    }


if __name__ == "__main__":
    CHART, values_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    cases = {"defaults": case({})}
    for f in sorted(values_dir.glob("*.yaml")):
        cases[f.stem] = case(yaml.safe_load(f.read_text()) or {})
    lint = helm.lint(CHART, namespace=NAMESPACE, kube_version="v1.30.0", strict=True)
    print(json.dumps({
        "helm": helm.helm_sdk_version(),
        "k8s_versions": K8S_VERSIONS,
        "lint": lint,
        "controls": controls(cases["defaults"]),
        "cases": cases,
    }, indent=1))
