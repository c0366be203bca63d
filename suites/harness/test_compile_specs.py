"""kernels/_compile.py's spec builder (the specs `fusebench inspect` compiles): a signature is derived from the
jitted function (``spec_for``), so every shipped spec types exactly its kernel's arguments, in the kernel's order,
and an argument no rule types is an error."""

import pytest
from toy_kernels import SIGNATURE, _matmul_tile

import fusebench.baseline_attention
from kernels import attention, gat, spmm
from kernels._compile import signature_of, spec_for

_TOY_TYPES = {"c_ptr": "*fp32", "*_ptr": "*fp16", "stride_*": "i32"}  # first match wins: c_ptr before *_ptr
_TOY_TILES = {"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}


def test_the_signature_follows_the_kernel_and_the_first_rule_that_matches():
    signature = signature_of(_matmul_tile, _TOY_TILES, _TOY_TYPES)
    assert list(signature.items()) == list(SIGNATURE.items())  # the hand-typed one, order included


def test_an_argument_no_rule_types_is_an_error_naming_it():
    with pytest.raises(ValueError, match="'stride_bk'"):
        signature_of(_matmul_tile, _TOY_TILES, {"*_ptr": "*fp16", "stride_am": "i32", "stride_cm": "i32"})


def test_a_constexpr_that_is_not_an_argument_is_an_error_naming_it():
    with pytest.raises(ValueError, match="BLOCK_Q"):
        signature_of(_matmul_tile, {**_TOY_TILES, "BLOCK_Q": 16}, _TOY_TYPES)


def test_spec_for_keeps_the_constexprs_and_the_other_fields():
    spec = spec_for("toy.matmul", _matmul_tile, _TOY_TILES, _TOY_TYPES, num_warps=4, num_stages=2, config="B64")
    assert (spec.constexprs, spec.num_warps, spec.num_stages, spec.config) == (_TOY_TILES, 4, 2, "B64")


@pytest.mark.parametrize("module", [attention, spmm, gat, fusebench.baseline_attention], ids=lambda m: m.__name__)
def test_every_shipped_spec_types_its_kernels_arguments_in_order(module):
    for spec in module.compile_specs():
        assert list(spec.signature) == list(spec.fn.arg_names), spec.kernel
        assert {name for name, kind in spec.signature.items() if kind == "constexpr"} == set(spec.constexprs)
