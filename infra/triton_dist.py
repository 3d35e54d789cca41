"""The tritonserver binary and Python backend, taken from the `nvidia-pytriton` wheel.

The wheel pins numpy<2, so it is installed without dependencies into a directory of its
own under tools_dir; only the server inside it is used, never the pytriton package.

The Python backend runs models in `triton_python_backend_stub`, which embeds libpython and is
linked with a pybind11 older than NumPy 2: with NumPy 2 it misreads dtypes (string tensors
arrive as garbage). So the stub runs in a small environment of its own, shaped like a venv:
NumPy 1 first, then everything else (torch, sentence-transformers) from the running venv.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import site
import subprocess
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

PYTRITON_VERSION = "0.7.0"
STUB_NUMPY = "numpy==1.26.4"
PY_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


@dataclass(frozen=True)
class TritonDist:
    root: Path  # the pip --target directory of nvidia-pytriton

    @property
    def server_dir(self) -> Path:
        return self.root / "pytriton" / "tritonserver"

    @property
    def binary(self) -> Path:
        return self.server_dir / "bin" / "tritonserver"

    @property
    def backends_dir(self) -> Path:
        return self.server_dir / "backends"

    @property
    def caches_dir(self) -> Path:
        return self.server_dir / "caches"

    @property
    def libs_dir(self) -> Path:
        return self.root / "nvidia_pytriton.libs"

    @property
    def stub(self) -> Path:
        return self.backends_dir / "python" / "triton_python_backend_stub"

    @property
    def stub_numpy_dir(self) -> Path:
        return self.root.with_name(f"{self.root.name}-numpy1-py{PY_VERSION}")

    def source_stub(self) -> Path:
        """The stub built for the running interpreter's Python version."""
        return self.server_dir / "python_backend_stubs" / PY_VERSION / "triton_python_backend_stub"

    def installed(self) -> bool:
        return self.binary.is_file() and (self.backends_dir / "python" / "libtriton_python.so").is_file()


def triton_dist(tools_dir: Path) -> TritonDist:
    return TritonDist(tools_dir / f"pytriton-{PYTRITON_VERSION}")


def install_triton(tools_dir: Path) -> TritonDist:
    """Install the server and NumPy 1 for its stub once, and place the stub for this Python."""
    dist = triton_dist(tools_dir)
    if not dist.installed():
        _pip_target(dist.root, f"nvidia-pytriton=={PYTRITON_VERSION}")
    if not (dist.stub_numpy_dir / "numpy").is_dir():
        _pip_target(dist.stub_numpy_dir, STUB_NUMPY)
    source = dist.source_stub()
    if not source.is_file():
        raise RuntimeError(f"nvidia-pytriton {PYTRITON_VERSION} has no Python backend stub at {source}")
    # The backend runs the stub found next to libtriton_python.so (as pytriton arranges it);
    # that directory is as deep as python_backend_stubs/3.X, so the stub's RPATH still holds.
    if not dist.stub.is_file() or not filecmp.cmp(source, dist.stub, shallow=False):
        tmp = dist.stub.with_suffix(".tmp")
        shutil.copyfile(source, tmp)
        tmp.rename(dist.stub)
    for program in (dist.binary, dist.stub):
        program.chmod(0o755)
    return dist


def write_stub_env(env_dir: Path, dist: TritonDist) -> Path:
    """A venv-shaped directory for the stub's interpreter: NumPy 1, then this venv's packages.

    The stub's interpreter is isolated (PYTHONPATH is ignored) and finds its prefix by looking
    up `python3` on PATH, then a pyvenv.cfg beside it, as pytriton relies on.
    """
    bin_dir = env_dir / "bin"
    site_dir = env_dir / "lib" / f"python{PY_VERSION}" / "site-packages"
    bin_dir.mkdir(parents=True, exist_ok=True)
    site_dir.mkdir(parents=True, exist_ok=True)
    base_executable = Path(getattr(sys, "_base_executable", sys.executable)).resolve()
    (env_dir / "pyvenv.cfg").write_text(
        f"home = {base_executable.parent}\ninclude-system-site-packages = false\n"
        f"version = {'.'.join(map(str, sys.version_info[:3]))}\n"
    )
    for name in ("python3", "python"):
        link = bin_dir / name
        link.unlink(missing_ok=True)
        link.symlink_to(base_executable)
    # addsitedir also runs the venv's own .pth files (e.g. this project's editable install).
    venv_sites = [p for p in site.getsitepackages() if Path(p).is_dir()]
    # No __pycache__ beside a version's model.py (the interpreter ignores PYTHONDONTWRITEBYTECODE):
    # Triton would count it a change of the version and reload every version of the model.
    lines = [str(dist.stub_numpy_dir), *(f"import site; site.addsitedir({p!r})" for p in venv_sites),
             "import sys; sys.dont_write_bytecode = True"]
    (site_dir / "flywheel-stub.pth").write_text("\n".join(lines) + "\n")
    return env_dir


def server_environment(dist: TritonDist, stub_env: Path) -> dict[str, str]:
    """Variables tritonserver needs so that its stubs run this interpreter in `stub_env`."""
    # The stub links libpython3.X.so dynamically; without our LIBDIR first it would load the
    # system's libpython (another patch release) under our prefix.
    libdir = sysconfig.get_config_var("LIBDIR")
    lib_paths = [p for p in (libdir, str(dist.libs_dir), os.environ.get("LD_LIBRARY_PATH")) if p]
    return {
        "LD_LIBRARY_PATH": os.pathsep.join(lib_paths),
        "PATH": os.pathsep.join([str(stub_env / "bin"), os.environ.get("PATH", "/usr/bin:/bin")]),
    }


def _pip_target(target: Path, requirement: str) -> None:
    """`pip install --target` without dependencies, moved into place only once complete."""
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    pip = [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-compile"]
    subprocess.run([*pip, "--target", str(staging), requirement], check=True)
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
