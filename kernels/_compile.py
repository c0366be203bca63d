"""What each kernel module ships, described so it can be compiled for a GPU without one.

Every module in ``kernels/`` exposes ``compile_specs() -> list[CompileSpec]``: one entry per
(jit function, shipped configuration, dtype) -- the autotune list and the defaults. A configuration
alone does not say what compiles: a launch specializes the kernel to its arguments (Triton's rule:
integers and pointers divisible by 16 get ``tt.divisibility``, integers equal to 1 become constants),
and that decides, e.g., whether 128-bit loads are possible. So ``fusebench inspect`` pairs each
configuration with the specializations the launches it serves actually get (``fusebench/specializations.py``
records them from the case catalog), :meth:`CompileSpec.for_launch`, and compiles each pair with
``triton.compile(ASTSource(...), target=GPUTarget(...))``.

Every module builds its specs with :func:`spec_for`: the signature comes from the jitted function's own
argument names, typed by the module's rules (``{"*_ptr": "*fp16", "stride_*": "i32", ...}``), so a spec
cannot drift from its kernel.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from fnmatch import fnmatchcase


@dataclass(frozen=True)
class CompileSpec:
    kernel: str  # e.g. "attention.forward"
    fn: object  # the @triton.jit function
    signature: dict[str, str]  # argument -> triton type ("*fp16", "i32", "fp32", "constexpr")
    constexprs: dict[str, object]
    num_warps: int
    num_stages: int
    config: str  # a short label of the configuration, e.g. "M128 N64 w4 s3"
    # The arguments a launch must share with this configuration for the configuration to serve it: the
    # value of a constexpr (a tile the launcher derives from the shape), the type of a pointer (its dtype).
    launch_keys: tuple[str, ...] = ()
    # The constexprs a launch decides for itself (flags the launcher derives from the call, e.g. causal or a
    # mask's kind): a row takes their values from its launch, so launches that differ in them are separate rows.
    launch_constexprs: tuple[str, ...] = ()
    expects_tensor_cores: bool = False  # the CI gate requires HMMA/HGMMA on sm_90 when True
    expects_tma: bool = False  # the CI gate requires TMA loads (UTMALDG) on sm_90 when True
    options: dict = field(default_factory=dict)  # extra compiler options (e.g. maxnreg)
    targets: tuple[int, ...] | None = None  # the compute capabilities it ships for; None: every one
    # Set by for_launch: the arguments compiled as divisible by 16, those compiled as the constant 1,
    # a label of the specialization and the cases whose launches get it.
    divisible: tuple[str, ...] = ()
    ones: tuple[str, ...] = ()
    specialization: str = ""
    cases: str = ""

    @property
    def function(self) -> str:
        """The jit function's qualified name, as :class:`fusebench.specializations.Launch` records it."""
        return f"{self.fn.fn.__module__}.{self.fn.fn.__name__}"

    def serves(self, launch) -> bool:
        """Whether ``launch`` (a recorded launch of this function) would run this configuration."""
        if launch.function != self.function:
            return False
        for key in self.launch_keys:
            if self.signature[key] == "constexpr":
                if launch.constexprs.get(key) != self.constexprs[key]:
                    return False
            elif launch.signature.get(key) != self.signature[key]:
                return False
        return True

    def for_launch(self, launch) -> CompileSpec:
        """This configuration specialized as ``launch``'s arguments specialize it.

        Only runtime arguments take the launch's specialization; meta-parameters stay the configuration's
        (a switch the configuration turns on, e.g. an optional operand, keeps its pointer's alignment from
        the launch's placeholder argument).
        """
        # Triton specializes pointers and integers only (a float argument is never divisible or a constant).
        runtime = [name for name, kind in self.signature.items() if kind.startswith(("*", "i", "u"))]
        divisible = tuple(name for name in runtime if name in launch.divisible)
        ones = tuple(name for name in runtime if name in launch.ones and not self.signature[name].startswith("*"))
        flags = {name: launch.constexprs[name] for name in self.launch_constexprs if name in launch.constexprs}
        label = specialization_label(runtime, divisible, ones, flags)
        return replace(self, constexprs={**self.constexprs, **flags}, divisible=divisible, ones=ones,
                       specialization=label, cases=launch.case)

    def source(self):
        from triton.compiler import ASTSource

        names = list(self.signature)
        signature = {name: "constexpr" if name in self.ones else kind for name, kind in self.signature.items()}
        constexprs = {**self.constexprs, **{name: 1 for name in self.ones}}
        attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in self.divisible}
        return ASTSource(fn=self.fn, signature=signature, constexprs=constexprs, attrs=attrs)


def signature_of(fn, constexprs: Mapping[str, object], types: Mapping[str, str]) -> dict[str, str]:
    """``fn``'s arguments in its order, each typed for ``triton.compile``: ``"constexpr"`` where ``constexprs``
    sets it, else the type of the first rule in ``types`` whose pattern (``fnmatch``: ``"*_ptr"``,
    ``"stride_*"`` or an exact name) matches the name. Derived from the function, so an argument added to a
    kernel and left untyped fails here rather than compiling a wrong signature."""
    signature = {}
    for name in fn.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
            continue
        kind = next((kind for pattern, kind in types.items() if fnmatchcase(name, pattern)), None)
        if kind is None:
            raise ValueError(f"{fn.fn.__name__}: no compile type for argument {name!r} (types: {list(types)})")
        signature[name] = kind
    unknown = set(constexprs) - set(signature)
    if unknown:
        raise ValueError(f"{fn.fn.__name__}: constexprs {sorted(unknown)} are not arguments of the kernel")
    return signature


def spec_for(kernel: str, fn, constexprs: Mapping[str, object], types: Mapping[str, str], **fields) -> CompileSpec:
    """A :class:`CompileSpec` of ``fn`` whose signature is derived from the function (:func:`signature_of`);
    ``fields`` are the spec's other fields (``num_warps``, ``num_stages``, ``config``, ``launch_keys``, ...)."""
    return CompileSpec(kernel, fn, signature_of(fn, constexprs, types), dict(constexprs), **fields)


def specialization_label(runtime: list[str], divisible, ones, flags: dict | None = None) -> str:
    """What sets a specialization apart, briefly: the launch's flags that are on (``IS_CAUSAL``,
    ``MASK_KIND=2``), the runtime arguments equal to 1, those not divisible by 16."""
    ragged = [name for name in runtime if name not in divisible and name not in ones]
    on = [name if value is True else f"{name}={value}" for name, value in (flags or {}).items() if value]
    parts = ([f"flags: {' '.join(on)}"] if on else []) + ([f"=1: {' '.join(ones)}"] if ones else [])
    parts += [f"not /16: {' '.join(ragged)}"] if ragged else []
    return "; ".join(parts) or "all /16"
