"""Builds the C++ core `emp_data._C` with ninja (incremental, parallel), without linking libtorch.

Environment switches:
  EMP_DATA_SANITIZE=1   build with -fsanitize=address,undefined (see README, "Sanitizer build")
  EMP_DATA_NO_OPENMP=1  build without OpenMP even where the compiler has it
  EMP_DATA_CUDA=1       also build the CUDA kernels `emp_data._C_cuda` with nvcc (CUDA_HOME or nvcc on
                        PATH); links the CUDA runtime statically, never libtorch
  EMP_DATA_CUDA_ARCH    GPU architectures for that build, e.g. "80;90" (the default)
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
CUDA_SOURCES = ["cuda/kernels.cu", "cuda/bindings_cuda.cpp"]
# csrc/ by layer: core (the store and its file, the per-step update), selection (partition,
# sampling, policies: select() and one rule_*.cpp per rule), webdataset (the tar scanner and key
# table), bindings (the pybind11 module, one file per part), cuda (the kernels).
SOURCES = ["core/buffer.cpp", "core/store.cpp", "core/store_file.cpp", "core/update.cpp",
           "selection/partition.cpp", "selection/sampling.cpp", "selection/policies.cpp",
           "selection/rule_soft.cpp", "selection/rule_topk.cpp", "selection/rule_sweep.cpp", "selection/rule_seta.cpp",
           "selection/kmeans.cpp", "webdataset/tar_index.cpp", "webdataset/key_table.cpp",
           "bindings/module.cpp", "bindings/py_threads.cpp", "bindings/py_store.cpp", "bindings/py_selection.cpp",
           "bindings/py_webdataset.cpp"]


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


def _cuda_home():
    """The CUDA toolkit root: CUDA_HOME / CUDA_PATH, else found from nvcc on PATH."""
    for var in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(var):
            return Path(os.environ[var])
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("EMP_DATA_CUDA=1 needs nvcc: install the CUDA toolkit or set CUDA_HOME")
    out = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", os.devnull], capture_output=True, text=True)
    for line in (out.stdout + out.stderr).splitlines():   # "#$ TOP=/usr/local/cuda-13.0/bin/.."
        if "TOP=" in line:
            return Path(line.split("TOP=", 1)[1].strip()).resolve()
    return Path(os.path.realpath(nvcc)).parent.parent


class NinjaBuildExt(build_ext):
    def build_extension(self, ext):
        import pybind11

        cxx = _compiler()
        flavour = "emp_data_ninja_cuda" if ext.name.endswith("_C_cuda") else "emp_data_ninja"
        build_dir = (Path(self.build_temp) / flavour).resolve()
        build_dir.mkdir(parents=True, exist_ok=True)
        output = Path(self.get_ext_fullpath(ext.name)).resolve()
        output.parent.mkdir(parents=True, exist_ok=True)

        cflags = ["-std=c++17", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra",
                  f"-I{ROOT / 'csrc'}", f"-I{pybind11.get_include()}", f"-I{sysconfig.get_paths()['include']}"]
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
        cuda = ext.name.endswith("_C_cuda")
        nvcc_flags = []
        if cuda:
            home = _cuda_home()
            lib = next((home / d for d in ("lib64", "lib", "targets/x86_64-linux/lib") if (home / d).exists()), home)
            cflags.append(f"-I{home / 'include'}")
            ldflags += [f"-L{lib}", "-lcudart_static", "-ldl", "-lrt", "-lpthread"]
            nvcc_flags = ["-std=c++17", "-O3", "-Xcompiler", "-fPIC", f"-I{home / 'include'}", f"-I{ROOT / 'csrc'}"]
            for arch in os.environ.get("EMP_DATA_CUDA_ARCH", "80;90").split(";"):
                nvcc_flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
        sources = CUDA_SOURCES if cuda else SOURCES
        lines = [
            f"cxx = {cxx}",
            f"nvcc = {home / 'bin' / 'nvcc'}" if cuda else "nvcc = nvcc",
            f"nvcc_flags = {' '.join(q(f) for f in nvcc_flags)}",
            f"cflags = {' '.join(q(f) for f in cflags)}",
            f"ldflags = {' '.join(q(f) for f in ldflags)}",
            "rule compile",
            "  command = $cxx $cflags -MMD -MF $out.d -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = CXX $in",
            "rule cuda_compile",
            "  command = $nvcc $nvcc_flags -MD -MF $out.d -c $in -o $out",
            "  depfile = $out.d",
            "  deps = gcc",
            "  description = NVCC $in",
            "rule link",
            "  command = $cxx $in -o $out $ldflags",
            "  description = LINK $out",
        ]
        objects = []
        for src in sources:
            obj = build_dir / (Path(src).stem + ".o")
            objects.append(str(obj))
            rule = "cuda_compile" if src.endswith(".cu") else "compile"
            lines.append(f"build {obj}: {rule} {ROOT / 'csrc' / src}")
        # Link inside the build dir (one per flavour, e.g. the sanitizer build), then copy: a shared
        # output path would let one flavour's .so look up to date to the other.
        linked = build_dir / output.name
        lines.append(f"build {linked}: link {' '.join(objects)}")
        (build_dir / "build.ninja").write_text("\n".join(lines) + "\n")
        subprocess.run([_ninja(), "-C", str(build_dir)], check=True)
        shutil.copy2(linked, output)


EXTENSIONS = [Extension("emp_data._C", sources=[f"csrc/{s}" for s in SOURCES])]
if os.environ.get("EMP_DATA_CUDA") == "1":
    EXTENSIONS.append(Extension("emp_data._C_cuda", sources=[f"csrc/{s}" for s in CUDA_SOURCES]))

setup(
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": NinjaBuildExt},
)
