"""The asv suites: every benchmark class is well-formed, and prepare() skips what cannot run."""

import importlib
import inspect
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
