"""Builds the C++ core `emp_data._C` with ninja (incremental, parallel), without linking libtorch.

Environment switches:
  EMP_DATA_SANITIZE=1   build with -fsanitize=address,undefined (see README, "Sanitizer build")
  EMP_DATA_NO_OPENMP=1  build without OpenMP even where the compiler has it
"""
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent
SOURCES = ["buffer.cpp", "store.cpp", "sampling.cpp", "policies.cpp", "tar_index.cpp", "key_table.cpp", "bindings.cpp"]


def _compiler():
    return os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++") or "c++"


def _ninja():
    found = shutil.which("ninja")
    if found:
        return found
    import ninja  # the PyPI package, a build dependency in pyproject.toml

    return str(Path(ninja.BIN_DIR) / "ninja")


def _openmp_works(cxx):
    if os.environ.get("EMP_DATA_NO_OPENMP") == "1":
        return False
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.cpp"
        src.write_text("#include <omp.h>\nint main() { return omp_get_max_threads() > 0 ? 0 : 1; }\n")
        result = subprocess.run([cxx, "-fopenmp", str(src), "-o", str(Path(tmp) / "probe")], capture_output=True)
        return result.returncode == 0


class NinjaBuildExt(build_ext):
    def build_extension(self, ext):
        import pybind11

        cxx = _compiler()
        build_dir = (Path(self.build_temp) / "emp_data_ninja").resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        output = Path(self.get_ext_fullpath(ext.name)).resolve()
        output.parent.mkdir(parents=True, exist_ok=True)

        cflags = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
                  f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
        ldflags = ["-shared"]
        if os.environ.get("EMP_DATA_SANITIZE") == "1":
            san = ["-O1", "-g", "-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
            cflags += san
            ldflags += san
        else:
            cflags += ["-O3", "-DNDEBUG"]
        if _openmp_works(cxx):
            cflags.append("-fopenmp")
            ldflags.append("-fopenmp")

        q = shlex.quote
        lines = [
            f"cxx = {cxx}",
            f"cflags = {' '.join(q(f) for f in cflags)}",
            f"ldflags = {' '.join(q(f) for f in ldflags)}",
            "rule compile",
            "  command = $cxx $cflags -MMD -MF $out.d -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = CXX $in",
            "rule link",
            "  command = $cxx $in -o $out $ldflags",
            "  description = LINK $out",
        ]
        objects = []
        for src in SOURCES:
            obj = build_dir / (Path(src).stem + ".o")
            objects.append(str(obj))
            lines.append(f"build {obj}: compile {ROOT / 'csrc' / src}")
        # Link inside the build dir (one per flavour, e.g. the sanitizer build), then copy: a shared
        # output path would let one flavour's .so look up to date to the other.
        linked = build_dir / output.name
        lines.append(f"build {linked}: link {' '.join(objects)}")
        (build_dir / "build.ninja").write_text("\n".join(lines) + "\n")
        subprocess.run([_ninja(), "-C", str(build_dir)], check=True)
        shutil.copy2(linked, output)


setup(
    ext_modules=[Extension("emp_data._C", sources=[f"csrc/{s}" for s in SOURCES])],
    cmdclass={"build_ext": NinjaBuildExt},
)
