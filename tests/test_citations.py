"""The design the code cites is in the repository: every `design.md §N` names a section docs/design.md has,
and nothing cites a document that is not in the repository."""

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\b(?:DESIGN|TOOLCHAIN|STYLE|CHECKPOINTS)\.md\b|\.\./shared/|/work/shared")
CITATION = re.compile(r"design\.md §(\d+)")


def tracked_texts() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    return [REPO / n for n in names if Path(n).suffix in (".py", ".md", ".java", ".swift", ".sh", ".gradle")
            and n != "tests/test_citations.py"]


def test_nothing_cites_a_document_outside_the_repository():
    found = [f"{p.relative_to(REPO)}:{i}: {line.strip()}" for p in tracked_texts()
             for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not found, "\n".join(found)


def test_every_design_citation_names_a_section_that_exists():
    sections = set(re.findall(r"^## §(\d+) ", (REPO / "docs" / "design.md").read_text(encoding="utf-8"), re.M))
    assert len(sections) >= 10
    cited = {(str(p.relative_to(REPO)), n) for p in tracked_texts()
             for n in CITATION.findall(p.read_text(encoding="utf-8"))}
    assert len(cited) >= 10  # the code does cite it
    missing = sorted(c for c in cited if c[1] not in sections)
    assert not missing, missing
