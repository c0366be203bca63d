"""The asv suites: every benchmark class is well-formed, and prepare() skips what cannot run."""

import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest

ASV_DIR = Path(__file__).resolve().parents[1] / "asv"
KNOWN_PREFIXES = ("time_", "timeraw_", "mem_", "peakmem_", "track_")
NOT_BENCHMARKS = {"setup", "teardown", "setup_cache"}


def _benchmark_classes():
    found = []
    for module_info in pkgutil.iter_modules([str(ASV_DIR)]):
        module = importlib.import_module(f"suites.asv.{module_info.name}")
        for name, cls in vars(module).items():
            if inspect.isclass(cls) and not name.startswith("_") and cls.__module__ == module.__name__:
                found.append(cls)
    return found


def test_the_suites_define_benchmark_classes():
    names = {cls.__name__ for cls in _benchmark_classes()}
    assert {"AttentionSpeed", "AttentionAgreement", "GraphSpeed", "GraphAgreement"} <= names


@pytest.mark.parametrize("cls", _benchmark_classes(), ids=lambda c: c.__name__)
def test_each_class_is_well_formed(cls):
    methods = [n for n, m in inspect.getmembers(cls, inspect.isfunction) if not n.startswith("_")]
    benchmarks = [n for n in methods if n not in NOT_BENCHMARKS]
    assert benchmarks, f"{cls.__name__} has no benchmark"
    unknown = [n for n in benchmarks if not n.startswith(KNOWN_PREFIXES)]
    assert not unknown, f"{cls.__name__}: methods asv would ignore or misread: {unknown}"
    assert len(cls.params) == len(cls.param_names), f"{cls.__name__}: params and param_names differ in length"
    assert all(isinstance(values, list) and values for values in cls.params)
    for name in benchmarks:
        signature = inspect.signature(getattr(cls, name))
        assert list(signature.parameters)[1:] == cls.param_names, f"{cls.__name__}.{name} arguments"
        if name.startswith("track_"):
            assert getattr(getattr(cls, name), "unit", None), f"{cls.__name__}.{name} has no unit"


def test_setup_raises_not_implemented_where_a_provider_cannot_run():
    from suites.asv.bench_attention import AttentionSpeed

    bench = AttentionSpeed()
    with pytest.raises(NotImplementedError, match="flash-attn runs on CUDA only"):
        bench.setup("bert-base-128", "flash-attn", "forward")
    bench.setup("bert-base-128", "sdpa-math", "forward")
    assert bench.track_time("bert-base-128", "sdpa-math", "forward") > 0


def test_kernel_resources_read_the_compiled_row_and_skip_what_did_not_compile(tmp_path, monkeypatch):
    from suites.asv import _inspect
    from suites.asv.bench_inspect import KernelResources

    monkeypatch.setenv("FUSEBENCH_INSPECT_CACHE", str(tmp_path))
    good, bad = "attention.forward [fp16 D64 M128 N64 w4 s3]", "attention.forward [fp16 D256 M128 N128 w8 s3]"
    row = dict(kernel="attention.forward", config=good[19:-1], compiled=True, error="", registers=168,
               spill_store_bytes=8, spill_load_bytes=4, shared_bytes=72 * 1024, hmma=0, hgmma=32, occupancy=0.125,
               loop_instructions=510, per_element=7.97, issue_clocks=1020.0)
    failed = dict(row, config=bad[19:-1], compiled=False, error="OutOfResources: shared memory")
    # what the first benchmark of (attention, sm_90) would have compiled and cached
    (tmp_path / f"attention-sm_90-{_inspect._sources_key()}.json").write_text(json.dumps({good: row, bad: failed}))
    modules = {good: "attention", bad: "attention"}
    monkeypatch.setattr("suites.asv.bench_inspect._MODULES", modules)
    bench = KernelResources()
    bench.setup(good, "sm_90")
    assert bench.track_registers(good, "sm_90") == 168
    assert bench.track_spill_bytes(good, "sm_90") == 12
    assert bench.track_shared_memory(good, "sm_90") == 72
    assert bench.track_tensor_core_instructions(good, "sm_90") == 32
    assert bench.track_occupancy(good, "sm_90") == 12.5
    assert bench.track_loop_instructions(good, "sm_90") == 510
    assert bench.track_instructions_per_element(good, "sm_90") == 7.97
    assert bench.track_issue_clocks(good, "sm_90") == 1020.0
    with pytest.raises(NotImplementedError, match="does not compile for sm_90: OutOfResources"):
        bench.setup(bad, "sm_90")
    with pytest.raises(NotImplementedError, match="no shipped kernel configuration"):
        bench.setup(_inspect.NO_SPECS, "sm_80")


def test_a_speed_class_skips_a_disagreeing_provider_with_the_reason(monkeypatch):
    import reference.attention as attention
    from suites.asv.bench_attention import AttentionAgreement, AttentionSpeed

    # the registration ends with the test
    monkeypatch.setattr(attention.ATTENTION_BACKENDS, "registered", dict(attention.ATTENTION_BACKENDS.registered))
    attention.register_attention_backend(
        "zeros", lambda q, k, v, **options: attention.scaled_dot_product_attention(q, k, v, **options) * 0)
    with pytest.raises(NotImplementedError, match="not timed: the result disagrees with the gold"):
        AttentionSpeed().setup("bert-base-128", "zeros", "forward")
    agreement = AttentionAgreement()
    agreement.setup("bert-base-128", "zeros", "forward")  # its agreement is still recorded, as a ratio
    assert agreement.track_agreement("bert-base-128", "zeros", "forward") > 1
