"""What the asv benchmark classes share: the provider lists they are parametrized over, and the gate.

asv needs ``params`` fixed when it discovers benchmarks, so each class lists every provider fusebench
knows by name (:data:`fusebench.providers.PROVIDER_NAMES`, the one list); ``setup`` raises
``NotImplementedError`` (asv: skipped) where one cannot run here, and a speed class's ``setup`` also where
the provider's result disagrees with the gold: a wrong result gets no figure in the dashboard, and the skip
says why.
"""

from fusebench.providers import PROVIDER_NAMES

ATTENTION_PROVIDERS = list(PROVIDER_NAMES["attention"])
GRAPH_PROVIDERS = list(PROVIDER_NAMES["graph"])
MODEL_PROVIDERS = list(PROVIDER_NAMES["models"])


def prepare(case: str, provider: str, mode: str, *, timed: bool):
    """:func:`fusebench.runner.prepare`; when ``timed``, refuses interpreted Triton runs and results that
    disagree with the gold (checked on the very call that is then timed)."""
    from fusebench.device import emulate_triton_without_gpu

    emulate_triton_without_gpu()
    from fusebench.runner import INTERPRETER_NOTE, prepare

    prepared = prepare(case, provider, mode)
    if timed and prepared.interpreted:
        raise NotImplementedError(INTERPRETER_NOTE)
    if timed:
        verdict = prepared.agreement()
        if not verdict.passed:
            raise NotImplementedError(f"not timed: the result disagrees with the gold: {verdict.describe()}")
    return prepared


class _SpeedBase:
    """track_time (device time: CUDA events via do_bench on a GPU), track_peak_memory, track_throughput."""

    timeout = 600

    def setup(self, case, provider, mode):
        self.prepared = prepare(case, provider, mode, timed=True)

    def track_time(self, case, provider, mode):
        from fusebench.metrics import timing

        return timing(self.prepared.call, self.prepared.workload.device).quantiles.p50

    track_time.unit = "ms"

    def track_peak_memory(self, case, provider, mode):
        from fusebench.metrics import peak_memory

        return peak_memory(self.prepared.call, self.prepared.workload.device)[0]

    track_peak_memory.unit = "bytes"


class _AgreementBase:
    """track_agreement: the agreement ratio (error / allowed error, <= 1 agrees) of the mode's result."""

    timeout = 600

    def setup(self, case, provider, mode):
        self.prepared = prepare(case, provider, mode, timed=False)

    def track_agreement(self, case, provider, mode):
        return self.prepared.agreement().ratio

    track_agreement.unit = "error/allowed"


def throughput(prepared) -> float:
    from fusebench.metrics import timing

    work, unit = prepared.work()
    seconds = timing(prepared.call, prepared.workload.device).quantiles.p50 * 1e-3
    return work / seconds / (1e12 if unit == "TFLOP/s" else 1e9)
