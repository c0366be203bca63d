"""fusebench/integrations/benchmarks.py: the ``models`` suite of the case catalog, run by the one runner."""

import pytest

from fusebench import cases, runner
from fusebench.device import identity
from fusebench.integrations import benchmarks
from fusebench.integrations.benchmarks import get_model_case, model_case_names, prepare_model
from fusebench.measure import INTERPRETER_NOTE
from fusebench.store import ResultsStore


def test_catalog_pairs_keep_the_structure_of_the_real_size():
    for name in cases.names("models"):
        real, cpu = cases.get(name, "gpu"), cases.get(name, "cpu")
        assert (real.name, real.framework, real.task, real.model) == (cpu.name, cpu.framework, cpu.task, cpu.model)
        assert (real.size, cpu.size) == ("gpu", "cpu") and cpu.tokens < real.tokens, name
        grouped = real.dims.get("kv_heads", 0) != real.dims.get("heads", 0)
        assert grouped == (cpu.dims.get("kv_heads", 0) != cpu.dims.get("heads", 0)), f"{name}: GQA kept"
    assert set(model_case_names("transformers")) | set(model_case_names("pyg")) == set(cases.names("models"))
    # one namespace: a model case never hides an op-level case of the same name
    assert len(cases.CATALOG) == len(cases._PAIRS) + len(cases._MODEL_PAIRS)


def test_run_with_the_models_suite_stores_time_memory_and_agreement_rows(tmp_path):
    store = ResultsStore(tmp_path)
    report = runner.run(suites=("models",), case_names=["vit-b16-224-model", "llama-gqa-generate"],
                        provider_names=["sdpa", "fusebench"], modes=("forward",), ident=identity("cpu"), store=store,
                        repeats=2)
    assert not report.failed
    frame = store.read(strict=True).frame
    assert (frame["suite"] == "models").all() and (frame["size"] == "cpu").all()
    assert frame["agrees"].all() and (frame["agreement"] <= 1).all()
    metrics = frame.groupby(["case", "provider"])["metric"].agg(set).to_dict()
    assert metrics[("vit-b16-224-model", "sdpa")] == {"agreement", "time", "memory"}
    assert metrics[("llama-gqa-generate", "sdpa")] == {"agreement", "time", "memory", "tokens_per_s"}
    # timed like every op-level result: interleaved rounds, each round's median kept
    time_row = frame.query("metric == 'time' and case == 'llama-gqa-generate'").iloc[0]
    assert time_row["mode"] == "generate" and len(time_row["repeats"].split(";")) == 2
    # the Triton provider on the CPU interpreter: checked, never timed
    assert metrics[("vit-b16-224-model", "fusebench")] == {"agreement"}
    fused = frame.query("provider == 'fusebench' and case == 'llama-gqa-generate'").iloc[0]
    assert INTERPRETER_NOTE in fused["note"] and "tokens identical to float64 eager" in fused["note"]
    assert "vit-b16-224-model" in runner.format_summary(report)


def test_a_model_provider_that_disagrees_gets_no_figure_and_fails_the_run(monkeypatch, tmp_path):
    honest_call = benchmarks.PreparedModel.call

    def off_by_one_percent(self):  # a 1% error on the timed call: far beyond float32's allowance
        out = honest_call(self)
        return out * 1.01 if self.provider == "sdpa" else out

    monkeypatch.setattr(benchmarks.PreparedModel, "call", off_by_one_percent)
    store = ResultsStore(tmp_path)
    report = runner.run(suites=("models",), case_names=["gcn-2layer/cora-like", "vit-b16-224-model"],
                        provider_names=["sdpa", "pyg"], modes=("forward",), ident=identity("cpu"), store=store,
                        repeats=1)
    (wrong,) = [r for r in report.results if r.provider == "sdpa"]
    assert wrong.status == "disagrees" and wrong.agreement > 1 and wrong.time_ms is None and report.failed
    frame = store.read(strict=True).frame
    assert frame.loc[frame["provider"] == "sdpa", "metric"].tolist() == ["agreement"]
    assert "time" in set(frame.loc[frame["provider"] == "pyg", "metric"])  # the honest provider is timed
    assert "DISAGREEING: 1 result(s)" in runner.format_summary(report)


def test_bad_names_and_providers_raise():
    with pytest.raises(ValueError, match="unknown model case 'gpt-5'"):
        get_model_case("gpt-5")
    with pytest.raises(ValueError, match="size must be 'gpu' or 'cpu'"):
        get_model_case("vit-b16-224-model", "tpu")
    with pytest.raises(ValueError, match="framework must be"):
        model_case_names("jax")
    with pytest.raises(NotImplementedError, match="provider 'pyg' does not apply to transformers cases"):
        prepare_model("vit-b16-224-model", "pyg", device="cpu")
    with pytest.raises(NotImplementedError, match="flash_attention_2 needs CUDA"):
        prepare_model("vit-b16-224-model", "flash_attention_2", device="cpu")
    with pytest.raises(ValueError, match="suites must be among"):
        runner.run(suites=("model",), ident=identity("cpu"), store=None)
