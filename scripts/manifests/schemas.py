"""A CRD's openAPIV3Schema: is it structural the way the API server requires, and a JSON Schema
(Draft 7) that judges custom resources the way the API server would with kubectl's default
strict field validation (unknown fields rejected, `nullable`, `x-kubernetes-int-or-string` and
`x-kubernetes-preserve-unknown-fields` honoured)."""

import copy
import re

import jsonschema

TYPES = {"object", "array", "string", "integer", "number", "boolean"}
JUNCTORS = ("allOf", "anyOf", "oneOf")
# Keywords the API server refuses in a v1 CRD schema (apiextensions validation).
FORBIDDEN = {
    "$ref": "$ref is not supported: inline the schema",
    "definitions": "definitions is not supported: inline the schemas",
    "$schema": "$schema is not supported",
    "id": "id is not supported",
    "patternProperties": "patternProperties is not supported",
    "dependencies": "dependencies is not supported",
    "additionalItems": "additionalItems is not supported",
}
# Set inside allOf/anyOf/oneOf/not, these make a schema non-structural.
NOT_IN_JUNCTORS = ("description", "type", "default", "additionalProperties", "nullable")
INT_OR_STRING_JUNCTOR = [{"type": "integer"}, {"type": "string"}]


def field_path(parts):
    """[spec, clients, 0, kind] -> spec.clients[0].kind"""
    out = ""
    for p in parts:
        if isinstance(p, int):
            out += f"[{p}]"
        else:
            out += ("." if out else "") + str(p)
    return out or "(root)"


def structural_problems(root):
    """Every way `root` (an openAPIV3Schema) is not a structural schema, as `(path, problem)`;
    paths are field paths such as `.spec.redis.replicas`, `[*]` for items and `{*}` for
    additionalProperties."""
    problems = []

    def bad(path, problem):
        problems.append((path or ".", problem))

    def walk(node, path, in_junctor=False, at_root=False, int_or_string_above=False):
        if not isinstance(node, dict):
            bad(path, f"must be a schema object, not {node!r}")
            return
        for key, why in FORBIDDEN.items():
            if key in node:
                bad(path, why)
        if node.get("uniqueItems") is True:
            bad(path, "uniqueItems: true is not allowed (quadratic to check)")
        if isinstance(node.get("items"), list):
            bad(path, "items must be one schema, not a list")
        t = node.get("type")
        int_or_string = node.get("x-kubernetes-int-or-string") is True
        preserve = node.get("x-kubernetes-preserve-unknown-fields") is True
        embedded = node.get("x-kubernetes-embedded-resource") is True

        if in_junctor:
            for key in NOT_IN_JUNCTORS:
                if key in node and not (key == "type" and int_or_string_above):
                    bad(path, f"{key} must not be set inside allOf/anyOf/oneOf/not")
        else:
            if t is None and not int_or_string and not preserve:
                bad(path, "has no type (every node needs one, unless it sets "
                          "x-kubernetes-int-or-string or x-kubernetes-preserve-unknown-fields)")
        if t is not None and t not in TYPES:
            bad(path, f"type {t!r} is not one of {sorted(TYPES)}")
        if int_or_string:
            if t is not None:
                bad(path, "x-kubernetes-int-or-string must not be combined with a type")
            for j in ("allOf", "anyOf"):
                if j in node and node[j] != INT_OR_STRING_JUNCTOR:
                    bad(path, f"with x-kubernetes-int-or-string, {j} may only be "
                              "[{type: integer}, {type: string}]")
        if preserve and t not in (None, "object"):
            bad(path, "x-kubernetes-preserve-unknown-fields needs type object (or none)")
        if embedded and (t != "object" or not (node.get("properties") or preserve)):
            bad(path, "x-kubernetes-embedded-resource needs type object with properties "
                      "or x-kubernetes-preserve-unknown-fields")
        if "properties" in node and "additionalProperties" in node:
            bad(path, "properties and additionalProperties must not be set together")
        if node.get("additionalProperties") is False:
            bad(path, "additionalProperties: false is not allowed (unknown fields are pruned)")
        if not in_junctor:
            if ("properties" in node or "additionalProperties" in node) and t not in (None, "object"):
                bad(path, f"has properties but type {t!r} (must be object)")
            if t == "array" and "items" not in node:
                bad(path, "type array needs items")
            if "items" in node and t != "array":
                bad(path, f"has items but type {t!r} (must be array)")
        list_type = node.get("x-kubernetes-list-type")
        if list_type is not None:
            if list_type not in ("atomic", "set", "map"):
                bad(path, f"x-kubernetes-list-type {list_type!r} is not atomic, set or map")
            if list_type == "map":
                keys = node.get("x-kubernetes-list-map-keys") or []
                item_props = (node.get("items") or {}).get("properties") or {}
                if not keys:
                    bad(path, "x-kubernetes-list-type: map needs x-kubernetes-list-map-keys")
                for k in keys:
                    if k not in item_props:
                        bad(path, f"list map key {k!r} is not a property of the items")
        if "default" in node and not in_junctor:
            for p, why in default_problems(node):
                bad(path + p, why)

        # Fields and items inside junctors must also be specified outside them.
        for j in JUNCTORS + ("not",):
            subs = node.get(j)
            if subs is None:
                continue
            subs = subs if isinstance(subs, list) else [subs]
            for i, sub in enumerate(subs):
                where = f"{path}<{j}[{i}]>"
                walk(sub, where, in_junctor=True, int_or_string_above=int_or_string)
                if isinstance(sub, dict):
                    for name in sub.get("properties") or {}:
                        if name not in (node.get("properties") or {}):
                            bad(where, f"field {name!r} is only specified inside {j}; "
                                       "specify it outside as well")
                    if "items" in sub and "items" not in node:
                        bad(where, f"items are only specified inside {j}; specify them outside as well")

        props = node.get("properties") or {}
        if (at_root or embedded) and "metadata" in props:
            metadata_problems(props["metadata"], path + ".metadata", bad)
        for name, sub in props.items():
            if (at_root or embedded) and name == "metadata":
                continue
            walk(sub, f"{path}.{name}", in_junctor=in_junctor)
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[*]", in_junctor=in_junctor)
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}{{*}}", in_junctor=in_junctor)

    if not isinstance(root, dict) or root.get("type") != "object":
        bad(".", "the root of openAPIV3Schema must have type object")
    walk(root, "", at_root=True)
    return problems


def metadata_problems(meta, path, bad):
    """At the root (and in embedded resources) metadata may only restrict name and generateName."""
    if not isinstance(meta, dict):
        bad(path, "must be a schema object")
        return
    allowed = {"type", "description", "properties"}
    for key in meta:
        if key not in allowed:
            bad(path, f"{key} is not allowed on metadata (only restrictions on name and generateName)")
    if meta.get("type") not in (None, "object"):
        bad(path, "metadata must have type object")
    for name, sub in (meta.get("properties") or {}).items():
        if name not in ("name", "generateName"):
            bad(f"{path}.{name}", "only metadata.name and metadata.generateName may be specified")
        elif not isinstance(sub, dict) or sub.get("type") != "string":
            bad(f"{path}.{name}", "must have type string")
        elif "default" in sub:
            bad(f"{path}.{name}", "must not have a default")


def default_problems(node):
    """A default must validate against its own node's schema and hold no field the node would
    prune; returns (sub-path, problem) pairs."""
    schema = to_jsonschema(node, root=False)
    return [(("." + field_path(list(e.absolute_path))) if e.absolute_path else "",
             f"default {short(node['default'])} is invalid: {message(e)}")
            for e in Draft7(schema).iter_errors(node["default"])]


def to_jsonschema(node, root=True, api_version=None, kind=None):
    """The Draft 7 schema that judges an object as the API server would judge it against this
    openAPIV3Schema (with strict field validation)."""
    out = convert(copy.deepcopy(node))
    if root:
        props = out.setdefault("properties", {})
        props["apiVersion"] = {"const": api_version} if api_version else {"type": "string"}
        props["kind"] = {"const": kind} if kind else {"type": "string"}
        props["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63},
                "namespace": {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                              "maxLength": 63},
            },
        }
        out["required"] = sorted(set(out.get("required", [])) | {"apiVersion", "kind", "metadata"})
        out["additionalProperties"] = False
    return out


def convert(node):
    if not isinstance(node, dict):
        return node
    preserve = node.pop("x-kubernetes-preserve-unknown-fields", False) is True
    int_or_string = node.pop("x-kubernetes-int-or-string", False) is True
    nullable = node.pop("nullable", False) is True
    for key in list(node):
        # Annotations, not constraints (formats are left to the API server).
        if key in ("description", "default", "format", "example", "externalDocs", "title") \
                or key.startswith("x-kubernetes-"):
            del node[key]
    for key in ("properties", "patternProperties"):
        if key in node:
            node[key] = {name: convert(sub) for name, sub in node[key].items()}
    for key in ("items", "additionalProperties", "not"):
        if isinstance(node.get(key), dict):
            node[key] = convert(node[key])
    for key in JUNCTORS:
        if key in node:
            node[key] = [convert(sub) for sub in node[key]]
    if int_or_string and "type" not in node:
        node["type"] = ["integer", "string"]
    if node.get("type") == "object" and not preserve and "additionalProperties" not in node:
        node["additionalProperties"] = False  # unknown fields: rejected by strict field validation
    if nullable:
        t = node.get("type")
        if t is not None:
            node["type"] = (t if isinstance(t, list) else [t]) + ["null"]
        if "enum" in node:
            node["enum"] = list(node["enum"]) + [None]
    return node


Draft7 = jsonschema.Draft7Validator


def errors(schema, instance):
    """Errors of `instance`, deepest first, as (field path, message)."""
    found = []
    for e in Draft7(schema).iter_errors(instance):
        found.append((field_path(list(e.absolute_path)), message(e)))
    return sorted(found)


def message(e):
    if e.context:  # anyOf/oneOf: the closest alternative says more than "is not valid under any"
        best = jsonschema.exceptions.best_match(e.context)
        if best is not None:
            return message(best)
    if e.validator == "additionalProperties" and e.validator_value is False:
        extra = sorted(set(e.instance) - set(e.schema.get("properties", {})))
        return f"unknown field(s) {', '.join(extra)}"
    return shorten(e.message)


def short(value):
    return shorten(repr(value), 80)


def shorten(text, limit=300):
    text = re.sub(r"\s+", " ", str(text))
    return text if len(text) <= limit else text[: limit - 1] + "…"
