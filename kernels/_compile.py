"""What each kernel module ships, described so it can be compiled for a GPU without one.

Every module in ``kernels/`` exposes ``compile_specs() -> list[CompileSpec]``: one entry per
(jit function, shipped configuration, dtype) -- the autotune list and the defaults. ``fusebench
inspect`` compiles each for NVIDIA targets with ``triton.compile(ASTSource(...), target=GPUTarget(...))``
and reads registers, spills, shared memory and tensor-core instructions from the cubin.

``aligned`` names the pointer and integer arguments that a real launch passes divisible by 16 (the
specialization Triton's launcher applies to such arguments); without it the compiler must assume
unaligned addresses and would never emit 128-bit loads, so the report would not describe what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class CompileSpec:
    kernel: str  # e.g. "attention.forward"
    fn: object  # the @triton.jit function
    signature: dict[str, str]  # argument -> triton type ("*fp16", "i32", "fp32", "constexpr")
    constexprs: dict[str, object]
    num_warps: int
    num_stages: int
    config: str  # a short label of the configuration, e.g. "M128 N64 w4 s3"
    aligned: tuple[str, ...] = ()
    expects_tensor_cores: bool = False  # the CI gate requires HMMA/HGMMA on sm_90 when True
    expects_tma: bool = False  # the CI gate requires TMA loads (UTMALDG) on sm_90 when True
    options: dict = field(default_factory=dict)  # extra compiler options (e.g. maxnreg)
    targets: tuple[int, ...] | None = None  # the compute capabilities it ships for; None: every one

    def source(self):
        from triton.compiler import ASTSource

        names = list(self.signature)
        attrs = {(names.index(name),): [["tt.divisibility", 16]] for name in self.aligned}
        return ASTSource(fn=self.fn, signature=self.signature, constexprs=self.constexprs, attrs=attrs)
