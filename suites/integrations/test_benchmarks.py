"""fusebench/integrations/benchmarks.py: model-level cases, providers and the rows they store."""

import pytest

from fusebench.integrations.benchmarks import (
    INTERPRETER_NOTE,
    MODEL_CATALOG,
    get_model_case,
    model_case_names,
    prepare_model,
    run_models,
)


def test_catalog_pairs_keep_the_structure_of_the_real_size():
    for name, sizes in MODEL_CATALOG.items():
        real, cpu = sizes["gpu"], sizes["cpu"]
        assert (real.name, real.framework, real.task, real.model) == (cpu.name, cpu.framework, cpu.task, cpu.model)
        assert (real.size, cpu.size) == ("gpu", "cpu") and cpu.tokens < real.tokens, name
        grouped = real.dims.get("kv_heads", 0) != real.dims.get("heads", 0)
        assert grouped == (cpu.dims.get("kv_heads", 0) != cpu.dims.get("heads", 0)), f"{name}: GQA kept"
    assert set(model_case_names("transformers")) | set(model_case_names("pyg")) == set(MODEL_CATALOG)


def test_run_models_stores_time_memory_and_agreement_rows(tmp_path):
    from fusebench.store import ResultsStore

    store = ResultsStore(tmp_path)
    rows = run_models(case_names=["vit-b16-224", "llama-gqa-generate"], provider_names=["sdpa", "fusebench"],
                      device="cpu", store=store)
    frame = store.read(strict=True).frame
    assert len(frame) == len(rows)
    metrics = {(r["case"], r["provider"]): set() for r in rows}
    for r in rows:
        metrics[(r["case"], r["provider"])].add(r["metric"])
        assert r["suite"] == "models" and r["size"] == "cpu" and r["agrees"] and r["agreement"] <= 1
    assert metrics[("vit-b16-224", "sdpa")] == {"agreement", "time", "memory"}
    assert metrics[("llama-gqa-generate", "sdpa")] == {"agreement", "time", "memory", "tokens_per_s"}
    # the Triton provider on the CPU interpreter: checked, never timed
    assert metrics[("vit-b16-224", "fusebench")] == {"agreement"}
    fused = next(r for r in rows if r["provider"] == "fusebench" and r["case"] == "llama-gqa-generate")
    assert INTERPRETER_NOTE in fused["note"] and "tokens identical to float64 eager" in fused["note"]


def test_bad_names_and_providers_raise():
    with pytest.raises(ValueError, match="unknown model case 'gpt-5'"):
        get_model_case("gpt-5")
    with pytest.raises(ValueError, match="size must be 'gpu' or 'cpu'"):
        get_model_case("vit-b16-224", "tpu")
    with pytest.raises(ValueError, match="framework must be"):
        model_case_names("jax")
    with pytest.raises(NotImplementedError, match="provider 'pyg' does not apply to transformers cases"):
        prepare_model("vit-b16-224", "pyg", device="cpu")
    with pytest.raises(NotImplementedError, match="flash_attention_2 needs CUDA"):
        prepare_model("vit-b16-224", "flash_attention_2", device="cpu")
