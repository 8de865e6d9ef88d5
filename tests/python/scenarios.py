"""The official Python client (`kubernetes`) against a running cluster: CRUD, lists with
selectors and pages, a watch resumed from a list's version, the three patch types,
server-side apply, `utils.create_from_yaml` and the dynamic client.

    python scenarios.py KUBECONFIG WORKDIR

Prints one line per scenario; the first failed check raises, and the exit status is not 0.
"""

import sys
import threading

from kubernetes import client, config, dynamic, utils, watch
from kubernetes.client.rest import ApiException

NS = "python"


def check(condition, what):
    if not condition:
        raise AssertionError(what)


def body_of(e):
    """An ApiException's body as text (the dynamic client leaves it bytes)."""
    return e.body.decode() if isinstance(e.body, bytes) else str(e.body)


def fails_with(code, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ApiException as e:
        check(e.status == code, f"{getattr(call, '__name__', call)}: expected {code}, got {e.status}: {body_of(e)}")
        return e
    raise AssertionError(f"{getattr(call, '__name__', call)} succeeded; expected {code}")


def crud(core):
    cm = client.V1ConfigMap(
        metadata=client.V1ObjectMeta(name="one", labels={"app": "py", "tier": "front"}),
        data={"a": "1"},
    )
    created = core.create_namespaced_config_map(NS, cm)
    check(created.metadata.uid and created.metadata.resource_version, "a created object has a uid and a version")
    fails_with(409, core.create_namespaced_config_map, NS, cm)
    got = core.read_namespaced_config_map("one", NS)
    check(got.data == {"a": "1"}, f"read back: {got.data}")
    stale = got.metadata.resource_version
    got.data["b"] = "2"
    replaced = core.replace_namespaced_config_map("one", NS, got)
    check(replaced.data == {"a": "1", "b": "2"}, f"replaced: {replaced.data}")
    check(replaced.metadata.resource_version != stale, "a replace moves the version")
    got.metadata.resource_version = stale
    got.data["c"] = "3"
    fails_with(409, core.replace_namespaced_config_map, "one", NS, got)
    fails_with(404, core.read_namespaced_config_map, "missing", NS)
    bad = client.V1ConfigMap(metadata=client.V1ObjectMeta(name="Not_A_Name"))
    e = fails_with(422, core.create_namespaced_config_map, NS, bad)
    check("metadata.name" in body_of(e), f"the 422 names the field: {body_of(e)}")
    print("crud: ok")


def lists(core):
    for name, tier in [("two", "back"), ("three", "front"), ("four", "db")]:
        core.create_namespaced_config_map(
            NS,
            client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, labels={"app": "py", "tier": tier})),
        )
    names = lambda items: sorted(i.metadata.name for i in items)  # noqa: E731
    front = core.list_namespaced_config_map(NS, label_selector="app=py,tier in (front)")
    check(names(front.items) == ["one", "three"], f"set-based selector: {names(front.items)}")
    not_db = core.list_namespaced_config_map(NS, label_selector="tier notin (db),tier")
    check(names(not_db.items) == ["one", "three", "two"], f"notin: {names(not_db.items)}")
    by_name = core.list_namespaced_config_map(NS, field_selector="metadata.name=two")
    check(names(by_name.items) == ["two"], f"field selector: {names(by_name.items)}")
    everywhere = core.list_config_map_for_all_namespaces(label_selector="app=py")
    check(len(everywhere.items) == 4, f"across namespaces: {names(everywhere.items)}")
    seen, token = [], None
    while True:
        page = core.list_namespaced_config_map(NS, label_selector="app=py", limit=2, _continue=token)
        check(len(page.items) <= 2, "a page holds at most the limit")
        seen += [i.metadata.name for i in page.items]
        token = page.metadata._continue
        if not token:
            break
    check(sorted(seen) == ["four", "one", "three", "two"], f"pages: {seen}")
    print("lists: ok")


def watches(core):
    listed = core.list_namespaced_config_map(NS)
    version = listed.metadata.resource_version
    events = []
    w = watch.Watch()

    def later():
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="later")))
        core.patch_namespaced_config_map("later", NS, {"data": {"x": "1"}})
        core.delete_namespaced_config_map("later", NS)

    # Made before the watch starts, after the list: the watch resumed from the list's
    # version still sees all of it, and nothing older.
    later()
    for event in w.stream(core.list_namespaced_config_map, NS, resource_version=version, timeout_seconds=10):
        events.append((event["type"], event["object"].metadata.name))
        if event["type"] == "DELETED":
            w.stop()
    check(
        events == [("ADDED", "later"), ("MODIFIED", "later"), ("DELETED", "later")],
        f"watch from a list's version: {events}",
    )
    # A live watch sees what happens after it starts.
    live = []
    w2 = watch.Watch()
    started = threading.Event()

    def make():
        started.wait(5)
        core.create_namespaced_config_map(NS, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="live")))

    threading.Thread(target=make).start()
    now = core.list_namespaced_config_map(NS).metadata.resource_version
    started.set()
    for event in w2.stream(core.list_namespaced_config_map, NS, resource_version=now, timeout_seconds=10):
        live.append((event["type"], event["object"].metadata.name))
        if event["object"].metadata.name == "live":
            w2.stop()
    check(("ADDED", "live") in live, f"live watch: {live}")
    print("watch: ok")


def patches(core, configmaps):
    # CoreV1Api sends a dict as a strategic merge patch and a list as a JSON patch; the
    # dynamic client sends the content type it is given.
    core.patch_namespaced_config_map("one", NS, {"metadata": {"labels": {"patched": "smp"}}})
    core.patch_namespaced_config_map("one", NS, [{"op": "add", "path": "/data/json", "value": "yes"}])
    configmaps.patch(
        name="one",
        namespace=NS,
        body={"data": {"merge": "yes", "a": None}},
        content_type="application/merge-patch+json",
    )
    got = core.read_namespaced_config_map("one", NS)
    check(got.metadata.labels.get("patched") == "smp", f"strategic merge: {got.metadata.labels}")
    check(got.data == {"b": "2", "json": "yes", "merge": "yes"}, f"json and merge patches: {got.data}")
    fails_with(422, core.patch_namespaced_config_map, "one", NS, [{"op": "test", "path": "/data/b", "value": "9"}])
    print("patch: ok")


def server_side_apply(core, configmaps):
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "v", "n": "1"}}
    configmaps.server_side_apply(body=body, namespace=NS, field_manager="python")
    got = core.read_namespaced_config_map("applied", NS)
    managers = {(m.manager, m.operation) for m in got.metadata.managed_fields}
    check(managers == {("python", "Apply")}, f"managers: {managers}")
    other = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "applied"}, "data": {"k": "other"}}
    try:
        configmaps.server_side_apply(body=other, namespace=NS, field_manager="rival")
        raise AssertionError("a rival's apply of another value must conflict")
    except ApiException as e:
        check(e.status == 409, f"conflict status: {e.status}")
        text = body_of(e)
        check("FieldManagerConflict" in text and ".data.k" in text, f"the conflict names the field: {text}")
    configmaps.server_side_apply(body=other, namespace=NS, field_manager="rival", force_conflicts=True)
    # The first manager drops `n`: it goes; `k` is the rival's now and stays.
    body["data"] = {}
    configmaps.server_side_apply(body=body, namespace=NS, field_manager="python")
    got = core.read_namespaced_config_map("applied", NS)
    check(got.data == {"k": "other"}, f"after the drop: {got.data}")
    try:
        configmaps.server_side_apply(body=body, namespace=NS)
        raise AssertionError("an apply without a field manager must fail")
    except ApiException as e:
        check(e.status == 422 and "fieldManager" in body_of(e), f"no field manager: {e.status} {body_of(e)}")
    print("server-side apply: ok")


MANIFEST = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: from-yaml
  labels: {app: from-yaml}
spec:
  replicas: 2
  selector:
    matchLabels: {app: from-yaml}
  template:
    metadata:
      labels: {app: from-yaml}
    spec:
      containers:
      - name: web
        image: busybox
---
apiVersion: v1
kind: Service
metadata:
  name: from-yaml
spec:
  selector: {app: from-yaml}
  ports:
  - port: 80
"""


def from_yaml(api, core, workdir):
    path = f"{workdir}/manifest.yaml"
    with open(path, "w") as f:
        f.write(MANIFEST)
    created = utils.create_from_yaml(api, path, namespace=NS)
    check(len(created) == 2, f"create_from_yaml made {len(created)} objects")
    deployment = client.AppsV1Api(api).read_namespaced_deployment("from-yaml", NS)
    check(deployment.spec.replicas == 2, "the Deployment is as written")
    service = core.read_namespaced_service("from-yaml", NS)
    check(service.spec.cluster_ip and service.spec.ports[0].port == 80, "the Service got an address")
    try:
        utils.create_from_yaml(api, path, namespace=NS)
        raise AssertionError("creating the manifest twice must fail")
    except utils.FailToCreateError as e:
        check(all(x.status == 409 for x in e.api_exceptions), "both already exist")
    print("create_from_yaml: ok")


def dynamic_client(dyn):
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    got = configmaps.get(name="one", namespace=NS)
    check(got.data.b == "2", "the dynamic client reads")
    listed = configmaps.get(namespace=NS, label_selector="tier=front")
    check(sorted(i.metadata.name for i in listed.items) == ["one", "three"], "the dynamic client lists")
    deployments = dyn.resources.get(api_version="apps/v1", kind="Deployment")
    scaled = deployments.patch(
        name="from-yaml", namespace=NS, body={"spec": {"replicas": 3}}, content_type="application/merge-patch+json"
    )
    check(scaled.spec.replicas == 3, "the dynamic client patches")
    applied = configmaps.server_side_apply(
        body={"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dyn"}, "data": {"d": "1"}},
        namespace=NS,
        field_manager="dynamic",
    )
    check(applied.data.d == "1", "the dynamic client applies")
    configmaps.delete(name="dyn", namespace=NS)
    fails_with(404, configmaps.get, name="dyn", namespace=NS)
    print("dynamic client: ok")


def main():
    kubeconfig, workdir = sys.argv[1], sys.argv[2]
    config.load_kube_config(config_file=kubeconfig)
    api = client.ApiClient()
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NS)))
    crud(core)
    lists(core)
    watches(core)
    dyn = dynamic.DynamicClient(api)
    configmaps = dyn.resources.get(api_version="v1", kind="ConfigMap")
    patches(core, configmaps)
    server_side_apply(core, configmaps)
    from_yaml(api, core, workdir)
    dynamic_client(dyn)
    core.delete_namespaced_config_map("one", NS)
    fails_with(404, core.read_namespaced_config_map, "one", NS)
    print("all scenarios passed")


if __name__ == "__main__":
    main()
