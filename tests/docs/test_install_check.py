"""The README's install check, run where a user runs it: from the repo root, after `pip install .`.
(This is the one test that runs Python from the checkout on purpose: that folder shadowing the
installed package is what it checks.)"""
import glob
import os
import subprocess
import sys

import emp_data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120)


def test_the_readme_install_check_works_from_the_repo_root():
    with open(os.path.join(ROOT, "README.md")) as f:
        assert 'python -I -c "import emp_data; print(emp_data.__version__)"' in f.read()
    out = run("-I", "-c", "import emp_data; print(emp_data.__version__)")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == emp_data.__version__


def test_the_shadowing_source_folder_is_named_with_what_to_do():
    out = run("-c", "import emp_data")
    if glob.glob(os.path.join(ROOT, "emp_data", "_C*")):
        assert out.returncode == 0, out.stderr          # built in place: the source folder works
        return
    assert out.returncode != 0
    assert "imported from its source folder" in out.stderr and "python -I" in out.stderr
    assert "partially initialized module" not in out.stderr
