"""runtime/manifest.py: a build's manifest is checked against its JSON Schema when it is loaded, and
refused with one line naming the offending value."""

import json
import shutil

import pytest
from jsonschema import Draft202012Validator

from runtime.manifest import SCHEMA_PATH, BuildError, json_path, load_manifest


@pytest.fixture(scope="module")
def build(builds):
    return builds.get("onnx", "mixed")  # split layout: every method, vision_prefill included


@pytest.fixture
def edit(build, tmp_path):
    """edit(fn): a copy of the build whose manifest fn changed; returns the manifest's path."""

    def make(change):
        copy = tmp_path / "build"
        shutil.copytree(build, copy)
        manifest = json.loads((copy / "manifest.json").read_text())
        change(manifest)
        (copy / "manifest.json").write_text(json.dumps(manifest))
        return copy / "manifest.json"

    return make


def test_the_schema_is_a_valid_2020_12_schema():
    Draft202012Validator.check_schema(json.loads(SCHEMA_PATH.read_text()))


@pytest.mark.parametrize("parts, text", [(["image", "size"], "image.size"), (["image", "mean", 0], "image.mean[0]"),
                                         (["graphs", "methods", "a", "inputs", 2, "dtype"],
                                          "graphs.methods.a.inputs[2].dtype"), ([], "")])
def test_json_path(parts, text):
    assert json_path(parts) == text


@pytest.mark.slow
def test_the_build_loads(build):
    assert load_manifest(build)["kv"]["layout"] == "split"


REMOVE = object()


def _change(manifest: dict, path: list, value) -> None:
    parent = manifest
    for key in path[:-1]:
        parent = parent[key]
    if value is REMOVE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value


@pytest.mark.slow
@pytest.mark.parametrize("path, value, message", [
    (["image", "size"], "256px", "image.size: '256px' is not of type 'integer'"),
    (["image", "size"], 0, "image.size: 0 is less than the minimum of 1"),
    (["image", "mean"], [0.5, 0.5], "image.mean: [0.5, 0.5] is too short"),
    (["image", "std"], [1.0, 0.0, 1.0], "image.std[1]: 0.0 is less than or equal to the minimum of 0"),
    (["prompt"], {}, "prompt: 'before_image' is a required property"),
    (["prompt", "after_image"], "Answer:", "prompt.after_image: 'Answer:' does not match '\\\\{prompt\\\\}'"),
    (["kv"], REMOVE, "'kv' is a required property"),
    (["graphs", "methods", "vision_prefill"], REMOVE, "graphs.methods: 'vision_prefill' is a required property"),
    (["graphs", "methods", "text_decoder", "inputs", 1, "dtype"], "int8",
     "graphs.methods.text_decoder.inputs[1].dtype: 'int8' is not one of ['float32', 'float16', 'int64', 'int32']"),
])
def test_a_manifest_against_its_schema_is_refused_with_the_schemas_message(edit, path, value, message):
    file = edit(lambda m: _change(m, path, value))
    with pytest.raises(BuildError) as e:
        load_manifest(file.parent)
    assert str(e.value) == f"{file}: {message}"


@pytest.mark.slow
def test_the_schema_version_is_checked_first(edit):
    path = edit(lambda m: m.update(schema_version=1, image="broken"))
    with pytest.raises(BuildError, match="has schema version 1; this runtime reads version 2"):
        load_manifest(path.parent)


@pytest.mark.slow
def test_a_long_or_multiline_value_still_gives_one_short_line(edit):
    path = edit(lambda m: _change(m, ["prompt", "image_token"], ["<image>\n" * 200]))
    with pytest.raises(BuildError) as e:
        load_manifest(path.parent)
    line = str(e.value)
    assert "\n" not in line and line.startswith(f"{path}: prompt.image_token: ['<image>\\n")
    assert line.endswith("...") and len(line) <= len(str(path)) + len(": prompt.image_token: ") + 200


@pytest.mark.slow
def test_a_manifest_that_is_not_an_object_or_not_json_is_refused(build, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(build, copy)
    (copy / "manifest.json").write_text("[1, 2]")
    with pytest.raises(BuildError, match="schema version None"):
        load_manifest(copy)
    (copy / "manifest.json").write_text('{"schema_version": 2,')
    with pytest.raises(BuildError, match="is not valid JSON"):
        load_manifest(copy)
