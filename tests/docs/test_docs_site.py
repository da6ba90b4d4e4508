"""docs/ builds as a site with mkdocs, strictly: every page in the nav, no link to a missing page."""
import pathlib
import re
import subprocess
import sys

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_docs_build_strictly(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "streams" / "index.html").exists()
    nav = (ROOT / "mkdocs.yml").read_text()
    missing = [p.name for p in (ROOT / "docs").glob("*.md") if p.name not in nav]
    assert not missing, f"docs pages not in the mkdocs nav: {missing}"


def test_every_repository_path_the_docs_and_makefile_name_exists():
    """A moved test or benchmark leaves `make cuda` or a documented command pointing at nothing;
    on a machine without a GPU that would not show until someone ran it."""
    texts = [ROOT / "Makefile", ROOT / "README.md", ROOT / ".ci" / "run", *sorted((ROOT / "docs").glob("*.md"))]
    pattern = re.compile(r"\b((?:tests|benchmarks|examples|fuzz|csrc)/[\w./-]+\.(?:py|cpp|h|cu|sh|md))\b")
    missing = sorted({f"{p.name}: {m}" for p in texts if p.exists() for m in pattern.findall(p.read_text())
                      if not (ROOT / m).exists()})
    assert not missing, missing
