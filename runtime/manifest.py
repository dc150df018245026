"""manifest.json: the single source of truth for the runtime and the apps (docs/runner-protocol.md).

A build directory is loaded from its manifest alone. `load_manifest` checks the schema version, then
the manifest against its JSON Schema (`manifest.schema.json` beside this file), then that every file
it names is present, and raises `BuildError` with one line saying what is wrong: for a schema
violation, the schema's own message and the JSON path of the offending value.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

SCHEMA_VERSION = 2  # 2: vision K/V as method outputs/inputs, no state shared between methods
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
COMPLETE_MARKER = "manifest.json"  # written last: a directory without it is not a build
MESSAGE_LIMIT = 200  # characters of the schema's message (it quotes the offending value)


class BuildError(ValueError):
    """A build directory that cannot be used; the message says why in one line."""


def load_manifest(build_dir: Path) -> dict:
    build_dir = Path(build_dir)
    path = build_dir / "manifest.json"
    if not build_dir.is_dir():
        raise BuildError(f"build directory not found: {build_dir}")
    if not path.is_file():
        raise BuildError(f"{build_dir} has no manifest.json: not a complete foveate build")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BuildError(f"{path} is not valid JSON: {e}") from None
    check_manifest(manifest, str(path))
    absent = [f for f in graph_files(manifest) + [manifest["tokenizer"]] if not (build_dir / f).exists()]
    if absent:
        raise BuildError(f"{build_dir} is missing {', '.join(absent)} named in its manifest")
    return manifest


def check_manifest(manifest, where: str = "manifest.json") -> None:
    """Raise BuildError unless `manifest` (parsed JSON) is of this schema version and follows the schema;
    `where` names it in the message."""
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise BuildError(f"{where} has schema version {version!r}; this runtime reads version {SCHEMA_VERSION} "
                         "(rebuild with this foveate)")
    error = best_match(_validator().iter_errors(manifest))
    if error is not None:
        message = " ".join(error.message.split())  # one line whatever the value holds
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT - 3] + "..."
        at = json_path(error.absolute_path)
        raise BuildError(f"{where}: {at + ': ' if at else ''}{message}")


def json_path(parts) -> str:
    """("image", "mean", 0) -> "image.mean[0]"."""
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


@functools.lru_cache(maxsize=1)
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA_PATH.read_text()))


def graph_files(manifest: dict) -> list[str]:
    return list(manifest["graphs"]["files"])


def method_spec(manifest: dict, name: str) -> dict:
    methods = manifest["graphs"]["methods"]
    if name not in methods:
        raise BuildError(f"the build has no method {name!r}; it has {', '.join(methods)}")
    return methods[name]
