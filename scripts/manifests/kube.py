"""Kubernetes' own schemas, through kubernetes-validate in strict mode (unknown fields are
errors): the same verdict as `kubernetes-validate --strict -k VERSION FILE`, with every error of
an object listed rather than the first."""

import functools

import jsonschema
import kubernetes_validate
from kubernetes_validate import utils
from referencing import Registry, Resource

from . import schemas

# The schema files are large (the definitions alone are over a megabyte) and the same for
# every object of a version: read each once.
utils.schema_contents = functools.lru_cache(maxsize=None)(utils.schema_contents)


def tool_version():
    return kubernetes_validate.__version__


def known_versions():
    return utils.all_versions()


def resolve(wanted):
    """`1.30` -> the newest 1.30.x kubernetes-validate has; `newest` -> its newest version."""
    versions = known_versions()
    if wanted == "newest":
        return versions[-1]
    matching = [v for v in versions if utils.major_minor(v) == utils.major_minor(wanted)]
    if not matching:
        raise SystemExit(f"kubernetes-validate {tool_version()} has no schemas for Kubernetes {wanted} "
                         f"(it has {versions[0]} to {versions[-1]})")
    return matching[-1]


def validate(obj, version):
    """Problems of one object against Kubernetes `version`, as (field path, message); empty when
    it is valid."""
    try:
        utils.validate(obj, version, strict=True)
        return []
    except utils.ValidationError as first:
        found = all_errors(obj, version)
        return found or [(schemas.field_path(list(first.path)), schemas.message(first))]
    except utils.SchemaNotFoundError as e:
        return [("(kind)", f"no schema: {e.message}")]
    except (utils.InvalidSchemaError, utils.VersionNotSupportedError) as e:
        return [("(schema)", getattr(e, "message", str(e)))]


def all_errors(obj, version):
    """Every error, not only the first: the same schema and validator `utils.validate` uses."""
    try:
        api_version = obj["apiVersion"].split("/")
        group = api_version[0].split(".")[0] if len(api_version) == 2 else None
        api = f"{group}-{api_version[-1]}" if group else api_version[0]
        schema_dir = f"v{version}-local-strict"
        schema = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/{obj['kind'].lower()}-{api}.json",
                                       version)
        definitions = utils.schema_contents(f"kubernetes-json-schema/{schema_dir}/_definitions.json", version)
        registry = Resource.from_contents(definitions) @ (Resource.from_contents(schema) @ Registry())
        validator = jsonschema.validators.Draft202012Validator(schema, registry=registry)
        return sorted((schemas.field_path(list(e.absolute_path)), schemas.message(e))
                      for e in validator.iter_errors(obj))
    except Exception:  # the internals moved: the first error, from the public call, will do
        return []
