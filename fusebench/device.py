"""Device identity: what every stored result says about the machine, the software and the commit.

A benchmark figure means nothing without the device it was measured on and the code that produced
it, so :func:`identity` is recorded on every row of the results store and in a sidecar next to asv's
machine record (asv's own machine record has no GPU fields). On a machine without CUDA the device is
the CPU, named by its model.

Nothing here queries CUDA at import time; :func:`identity` does, once per call.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

import fusebench

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class DeviceIdentity:
    kind: str  # "cuda" or "cpu"
    name: str  # the GPU's name ("NVIDIA H200") or the CPU's model
    compute_capability: str  # "9.0"; "" on the CPU
    driver: str  # NVIDIA driver version; "" on the CPU or when nvidia-smi is missing
    cuda: str  # the CUDA version torch was built with; "" for a CPU build
    torch: str
    triton: str
    harness: str  # fusebench's version
    python: str
    commit: str  # HEAD of the repository the harness runs from; "unknown" outside a git checkout
    dirty: bool  # uncommitted changes to tracked files: the commit alone does not say what ran
    host: str
    cpu: str  # the CPU model, recorded on GPU machines too

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def label(self) -> str:
        """A short human name for tables: the GPU, or ``cpu: <model>``."""
        return self.name if self.kind == "cuda" else f"cpu: {self.name}"


def cpu_model() -> str:
    """The CPU's marketing name from /proc/cpuinfo, falling back to :func:`platform.processor`."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown cpu"


def git_commit(root: Path = ROOT) -> tuple[str, bool]:
    """(HEAD's hash, whether tracked files differ from it); ("unknown", False) outside a git checkout."""
    if shutil.which("git") is None:
        return "unknown", False
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return "unknown", False
    return head, bool(status.strip())


def _nvidia_driver() -> str:
    if shutil.which("nvidia-smi") is None:
        return ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return ""
    return out.splitlines()[0].strip() if out.strip() else ""


def identity(device: str | None = None) -> DeviceIdentity:
    """Who is measuring: the device (CUDA device 0 when available, else the CPU), software and commit."""
    import torch
    import triton

    kind = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if kind not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    commit, dirty = git_commit()
    cpu = cpu_model()
    if kind == "cuda":
        major, minor = torch.cuda.get_device_capability()
        name, capability, driver = torch.cuda.get_device_name(), f"{major}.{minor}", _nvidia_driver()
    else:
        name, capability, driver = cpu, "", ""
    return DeviceIdentity(
        kind=kind, name=name, compute_capability=capability, driver=driver, cuda=torch.version.cuda or "",
        torch=torch.__version__, triton=triton.__version__, harness=fusebench.__version__,
        python=platform.python_version(), commit=commit, dirty=dirty, host=platform.node(), cpu=cpu,
    )


def slug(text: str) -> str:
    """``"NVIDIA H200"`` -> ``"NVIDIA_H200"``: safe in file and machine names."""
    return re.sub(r"[^A-Za-z0-9.]+", "_", text).strip("_") or "unknown"


def machine_name(ident: DeviceIdentity) -> str:
    """asv's machine name: the host plus the GPU (and its compute capability), or ``-cpu``.

    asv keys results by machine name and its machine record has no GPU field, so the GPU has to be in
    the name: one host with two different GPUs is two asv machines.
    """
    if ident.kind == "cuda":
        return f"{slug(ident.host)}-{slug(ident.name)}-sm{ident.compute_capability.replace('.', '')}"
    return f"{slug(ident.host)}-cpu"


# The values Triton reads as "on" (its getenv_bool: case-insensitive, no surrounding spaces), used only
# when triton itself cannot be asked.
_TRITON_ON = ("1", "true", "on", "yes", "y")


def interpreting_triton() -> bool:
    """True when Triton kernels run under its interpreter (a numpy emulation): their times are not kernel
    times, on any device.

    Asks Triton itself (``triton.knobs.runtime.interpret``: TRITON_INTERPRET as Triton parses it, or the
    knob set in code), so every value Triton treats as on counts, not only ``1``.
    """
    try:
        from triton import knobs

        return bool(knobs.runtime.interpret)
    except (ImportError, AttributeError):
        return os.environ.get("TRITON_INTERPRET", "").lower() in _TRITON_ON


def emulate_triton_without_gpu() -> None:
    """Without CUDA, Triton kernels can only be emulated: set TRITON_INTERPRET=1 unless already chosen.

    Must run before any kernel module is imported (triton.jit reads it when a kernel is defined).
    """
    import torch

    if not torch.cuda.is_available():
        os.environ.setdefault("TRITON_INTERPRET", "1")


def default_dtype(device: str) -> str:
    """The dtype a run uses unless told: bfloat16 on a GPU (what the kernels are for), float32 on the CPU."""
    return "bfloat16" if str(device).startswith("cuda") else "float32"
