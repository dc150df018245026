"""manifest.json: the single source of truth for the runtime and the apps (DESIGN.md §3).

A build directory is loaded from its manifest alone. `load_manifest` checks the schema version,
the required keys and that every graph file is present, and raises `BuildError` with one line
saying what is wrong. The JSON Schema the apps can validate against is `manifest.schema.json`
beside this file.
"""

from __future__ import annotations

import json
from pathlib import Path

SCHEMA_VERSION = 2  # 2: vision K/V as method outputs/inputs, no state shared between methods
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")
REQUIRED = ("schema_version", "name", "target", "dtype", "model", "plan", "kv_layout", "image", "prompt",
            "tokenizer", "graphs", "kv", "parity")
COMPLETE_MARKER = "manifest.json"  # written last: a directory without it is not a build


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
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise BuildError(f"{path} is not valid JSON: {e}") from None
    version = manifest.get("schema_version") if isinstance(manifest, dict) else None
    if version != SCHEMA_VERSION:
        raise BuildError(f"{path} has schema version {version!r}; this runtime reads version {SCHEMA_VERSION} "
                         "(rebuild with this foveate)")
    missing = [k for k in REQUIRED if k not in manifest]
    if missing:
        raise BuildError(f"{path} lacks required keys: {', '.join(missing)}")
    absent = [f for f in graph_files(manifest) + [manifest["tokenizer"]] if not (build_dir / f).exists()]
    if absent:
        raise BuildError(f"{build_dir} is missing {', '.join(absent)} named in its manifest")
    return manifest


def graph_files(manifest: dict) -> list[str]:
    return list(manifest["graphs"]["files"])


def method_spec(manifest: dict, name: str) -> dict:
    methods = manifest["graphs"]["methods"]
    if name not in methods:
        raise BuildError(f"the build has no method {name!r}; it has {', '.join(methods)}")
    return methods[name]
