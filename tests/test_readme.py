"""The README's commands run as pasted after its set-up: the venv's Python, and modules and scripts that exist."""

import importlib.util
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", *sorted(REPO.glob("*/README.md"))]


def command_lines(path: Path) -> list[str]:
    """The indented code lines (Markdown code blocks) that run Python."""
    return [line.strip() for line in path.read_text(encoding="utf-8").splitlines()
            if line.startswith("    ") and re.search(r"\bpython(3(\.\d+)?)?\s", line)]


def test_every_command_uses_the_venvs_python():
    bare = [f"{p.relative_to(REPO)}: {c}" for p in READMES for c in command_lines(p)
            if re.search(r"(^|&&\s*|\|\s*)python\s", c)]
    assert not bare, "\n".join(bare)
    assert len(command_lines(REPO / "README.md")) >= 20


def test_every_module_and_script_a_command_names_exists():
    missing = []
    for path in READMES:
        for c in command_lines(path):
            for module in re.findall(r"python -m ([\w.]+)", c):
                if module != "pytest" and importlib.util.find_spec(module) is None:
                    missing.append(f"{path.relative_to(REPO)}: -m {module}")
            for script in re.findall(r"python ((?:export|models|runtime|tools|data)/\w+\.py)", c):
                if not (REPO / script).is_file():
                    missing.append(f"{path.relative_to(REPO)}: {script}")
    assert not missing, "\n".join(missing)
