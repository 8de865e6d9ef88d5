#!/usr/bin/env python3
"""Writes the protobuf schema the API server decodes Kubernetes protobuf bodies with.

kubectl 1.32 sends protobuf bodies (`application/vnd.kubernetes.protobuf`) for the objects its
generators create. The messages' field numbers and types come from the `k8s-pb` crate (prost
bindings of the Kubernetes protos); the JSON spelling of every field comes from `k8s-openapi`
(the JSON model the API server stores), since prost's snake_case names lose it (`clusterIPs`
becomes `cluster_i_ps`). Both are read from cargo's registry sources.

Which scalars mean "unset" when zero comes from the Go types (kubernetes/api and
kubernetes/apimachinery checkouts): Go's protobuf encoder writes every field that is not a
pointer, zero or not, and a `json:",omitempty"` value field is left out of JSON when zero.

    K8S_API_SRC=…/api K8S_APIMACHINERY_SRC=…/apimachinery \
        scripts/protobuf-schema.py > actors/apiserver/src/protobuf/schema.txt

Each message is a line `message <full name>`, then one line per field:
`<number> <json name> <one|many|map> <type> [<map value type>]`, where a type is a scalar
(string, bytes, bool, int32, int64, double) or a message's full name. A single scalar whose
zero value is left out of JSON is marked `omit` after its type; a field with a strategic
merge patch strategy carries `smp=<strategy>` and, for lists merged by key, `key=<field>`. A
field whose Go doc comment says how server-side apply merges it carries `ssa=map:<keys>`
(`+listType=map` with its `+listMapKey`s), `ssa=set` or `ssa=atomic` (`+listType`, `+mapType`,
`+structType`); a message marked `+structType=atomic` has `atomic` after its name.
"""

import glob
import os
import re
import sys

REGISTRY = os.path.expanduser("~/.cargo/registry/src")
PB_VERSION = "0.9.0"
OPENAPI_VERSION = "0.28.0"
OPENAPI_API = "v1_32"
# The packages served: every API group, and the shared machinery.
ROOTS = ("api", "apimachinery")


def crate_dir(name):
    found = glob.glob(os.path.join(REGISTRY, "*", name))
    if not found:
        sys.exit(f"{name} is not in cargo's registry; run `cargo fetch` first")
    return found[0]


def normalize(name):
    return name.replace("r#", "").replace("_", "").lower()


def json_names():
    """The JSON field names of every k8s-openapi type, by its full message name and the
    field's normalized spelling (lower case, no underscores)."""
    names = {}
    root = os.path.join(crate_dir(f"k8s-openapi-{OPENAPI_VERSION}"), "src", OPENAPI_API)
    pattern = re.compile(r'"([A-Za-z0-9$_-]+)" => Field::Key_')
    for path in glob.glob(os.path.join(root, "**", "*.rs"), recursive=True):
        module = os.path.relpath(os.path.dirname(path), root).split(os.sep)
        with open(path) as f:
            text = f.read()
        struct = re.search(r"^pub struct (\w+)", text, re.M)
        if struct is None:
            continue
        fields = {normalize(n): n for n in pattern.findall(text)}
        names[type_key(package_of(module) + "." + struct.group(1))] = fields
    return names


def type_key(full_name):
    """prost spells `HTTPGetAction` as `HttpGetAction`: types are matched in lower case."""
    return full_name.lower()


def camel(rust_name):
    parts = rust_name.replace("r#", "").split("_")
    return parts[0] + "".join(p[:1].upper() + p[1:] for p in parts[1:])


def package_of(module):
    """`api/core/v1` -> `k8s.io.api.core.v1`."""
    return "k8s.io." + ".".join(module)


def resolve(module, path):
    """A prost type path seen from `module`, as a full message name."""
    parts = path.split("::")
    here = list(module)
    while parts and parts[0] == "super":
        parts.pop(0)
        here.pop()
    *mods, name = parts
    return package_of(here + mods) + "." + name


STD = {"Option", "Vec", "Box", "String", "BTreeMap", "core", "option", "prost", "alloc",
       "vec", "boxed", "string", "collections", "u8"}


def message_type(module, rust_type):
    """The message a field's Rust type names (its last path that is not std's)."""
    candidates = re.findall(r"((?:super::)*(?:[a-z_0-9]+::)*[A-Z][A-Za-z0-9]*)", rust_type)
    for c in reversed(candidates):
        last = c.split("::")[-1]
        if last in STD or c.startswith("::") or c.split("::")[0] in ("core", "prost"):
            continue
        return resolve(module, c)
    sys.exit(f"no message type in {rust_type!r} ({'/'.join(module)})")


def field_type(rust_type_text):
    """Reads a field's Rust type up to the comma that ends it."""
    depth = 0
    for i, ch in enumerate(rust_type_text):
        if ch == "<":
            depth += 1
        elif ch == ">":
            depth -= 1
        elif ch == "," and depth == 0:
            return rust_type_text[:i]
    return rust_type_text


def scalar(word):
    return {"string": "string", "bytes": "bytes", "bool": "bool", "int32": "int32",
            "int64": "int64", "double": "double"}.get(word)


def messages(names):
    root = os.path.join(crate_dir(f"k8s-pb-{PB_VERSION}"), "src")
    out = []
    for path in sorted(glob.glob(os.path.join(root, "**", "mod.rs"), recursive=True)):
        module = os.path.relpath(os.path.dirname(path), root).split(os.sep)
        if module[0] not in ROOTS:
            continue
        with open(path) as f:
            text = "\n".join(line for line in f.read().splitlines()
                             if not line.strip().startswith("//"))
        structs = re.finditer(r"^pub struct (\w+) \{(?:\}|\n(.*?)^\})", text, re.M | re.S)
        for struct in structs:
            name, body = struct.group(1), struct.group(2) or ""
            fields = []
            attrs = re.finditer(r"#\[prost\(([^\]]*)\)\]\s*pub ((?:r#)?\w+):\s*", body)
            for attr in attrs:
                spec, rust_name = attr.group(1), attr.group(2)
                rust_type = field_type(body[attr.end():])
                tag = re.search(r'tag = "(\d+)"', spec).group(1)
                known = names.get(type_key(package_of(module) + "." + name))
                json = (known or {}).get(normalize(rust_name), camel(rust_name))
                words = [w.strip() for w in spec.split(",")]
                if spec.startswith("btree_map"):
                    key, value = re.search(r'btree_map = "(\w+), (\w+)"', spec).groups()
                    value = scalar(value) or message_type(module, rust_type.split(",", 1)[1])
                    fields.append((tag, json, "map", f"{key} {value}"))
                    continue
                kind = words[0].split(" ")[0]
                label = "many" if "repeated" in words else "one"
                typ = scalar(kind)
                if typ is None:
                    if kind != "message":
                        sys.exit(f"unknown field kind {kind!r} in {name}")
                    typ = message_type(module, rust_type)
                    # A Go struct embedded inline (`json:",inline"`) is a field of its own in
                    # protobuf; its fields are the parent's in JSON.
                    if known is not None and normalize(rust_name) not in known:
                        label = ("inline", typ)
                fields.append((tag, json, label, typ))
            out.append((package_of(module) + "." + name, fields))
    return out


GO_FIELD = re.compile(r'^\s+(\w+)\s+(\S+)\s+`([^`]*)`', re.M)
GO_STRUCT = re.compile(r"^type (\w+) struct \{\n(.*?)^\}", re.M | re.S)


MARKER = re.compile(r"^\s*//\s*\+(listType|listMapKey|mapType|structType)=(\S+)")


def markers_of(comments):
    """The server-side apply markers (`+listType=map`, `+listMapKey=name`, …) of a doc
    comment, by name, each with every value it was given."""
    out = {}
    for line in comments:
        m = MARKER.match(line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def apply_relationship(markers):
    """How server-side apply merges a field, from its markers: `map:<key>,<key>` for a
    list of objects merged by keys, `set` for a list of unique scalars, `atomic` for a
    list, map or struct replaced whole; `None` where the field carries no marker."""
    list_type = markers.get("listType", [None])[0]
    if list_type == "map":
        return "map:" + ",".join(markers.get("listMapKey", []))
    if list_type in ("set", "atomic"):
        return list_type
    if "atomic" in markers.get("mapType", []) + markers.get("structType", []):
        return "atomic"
    return None


def go_fields():
    """From the Go types, by message: the value (not pointer) fields that JSON leaves out
    when empty, and each field's strategic-merge-patch strategy and merge key."""
    roots = []
    for env, prefix in (("K8S_API_SRC", "k8s.io.api"),
                        ("K8S_APIMACHINERY_SRC", "k8s.io.apimachinery")):
        root = os.environ.get(env)
        if not root:
            sys.exit(f"{env} must name a checkout of its Kubernetes repository")
        roots.append((root, prefix))
    out = {}
    for root, prefix in roots:
        for path in glob.glob(os.path.join(root, "**", "types.go"), recursive=True):
            module = os.path.relpath(os.path.dirname(path), root).split(os.sep)
            package = prefix + "." + ".".join(module)
            with open(path) as f:
                text = f.read()
            for struct in GO_STRUCT.finditer(text):
                omitted, patch, apply = set(), {}, {}
                comments = []
                for line in struct.group(2).splitlines():
                    if line.strip().startswith("//"):
                        comments.append(line)
                        continue
                    field = GO_FIELD.match(line)
                    markers, comments = markers_of(comments), []
                    if field is None:
                        continue
                    typ, tag = field.group(2), field.group(3)
                    j = re.search(r'json:"([^"]*)"', tag)
                    if j is None:
                        continue
                    name, *options = j.group(1).split(",")
                    if "omitempty" in options and name and not typ.startswith("*"):
                        omitted.add(name)
                    strategy = re.search(r'patchStrategy:"([^"]*)"', tag)
                    key = re.search(r'patchMergeKey:"([^"]*)"', tag)
                    if strategy and name:
                        patch[name] = (strategy.group(1), key.group(1) if key else None)
                    relationship = apply_relationship(markers)
                    if relationship and name:
                        apply[name] = relationship
                above = text[:struct.start()].rstrip("\n").splitlines()
                doc = []
                while above and above[-1].strip().startswith("//"):
                    doc.append(above.pop())
                atomic = markers_of(doc).get("structType") == ["atomic"]
                out[type_key(package + "." + struct.group(1))] = (omitted, patch, apply, atomic)
    return out


def resolve_inline(all_messages, names, values):
    """Keeps `inline` where the field is named after its type (`localObjectReference`) or
    every field of the embedded message is the parent's in JSON; elsewhere (a field newer than k8s-openapi's model) the field is an ordinary one."""
    by_name = dict(all_messages)
    out = []
    for name, fields in all_messages:
        known = names.get(type_key(name)) or {}
        omitted, patch, apply, atomic = values.get(type_key(name), (set(), {}, {}, False))
        lines = []
        for tag, json, label, typ in fields:
            if isinstance(label, tuple):
                inner = by_name.get(typ, [])
                named = normalize(json) == normalize(typ.rsplit(".", 1)[1])
                inline = named or (inner and all(normalize(f[1]) in known for f in inner))
                label = "inline" if inline else "one"
            if label == "one" and "." not in typ and json in omitted:
                typ += " omit"
            if json in patch:
                strategy, key = patch[json]
                typ += f" smp={strategy}" + (f" key={key}" if key else "")
            if json in apply:
                typ += f" ssa={apply[json]}"
            lines.append(f"{tag} {json} {label} {typ}")
        out.append((name + (" atomic" if atomic else ""), lines))
    return out


def main():
    names = json_names()
    all_messages = resolve_inline(messages(names), names, go_fields())
    known = {name.split(" ")[0] for name, _ in all_messages}
    print(f"# Written by scripts/protobuf-schema.py from k8s-pb {PB_VERSION} and "
          f"k8s-openapi {OPENAPI_VERSION} ({OPENAPI_API}).")
    for name, fields in all_messages:
        for field in fields:
            parts = [p for p in field.split(" ") if p != "omit" and "=" not in p]
            for typ in parts[3:]:
                if "." in typ and typ not in known:
                    sys.exit(f"{name} refers to the unknown message {typ}")
        print(f"message {name}")
        for field in fields:
            print(field)


main()
