"""asv: whole models on each provider (real sizes on a GPU, CPU-sized variants otherwise)."""

from fusebench.cases import names

from ._common import MODEL_PROVIDERS as PROVIDERS


def _prepare(case: str, provider: str, *, timed: bool):
    from fusebench.device import emulate_triton_without_gpu

    emulate_triton_without_gpu()
    from fusebench.integrations.benchmarks import prepare_model
    from fusebench.measure import INTERPRETER_NOTE

    prepared = prepare_model(case, provider)  # NotImplementedError: asv skips
    if timed and prepared.interpreted:
        raise NotImplementedError(INTERPRETER_NOTE)
    if timed:  # a wrong result gets no figure: the skip says why
        verdict, _ = prepared.agreement()
        if not verdict.passed:
            raise NotImplementedError(f"not timed: the result disagrees with the gold: {verdict.describe()}")
    return prepared


class ModelSpeed:
    """track_time (device time: CUDA events via do_bench on a GPU) and track_peak_memory of the case's task."""

    params = [names("models"), PROVIDERS]
    param_names = ["case", "provider"]
    timeout = 1200

    def setup(self, case, provider):
        self.prepared = _prepare(case, provider, timed=True)

    def track_time(self, case, provider):
        from fusebench.metrics import timing

        return timing(self.prepared.call, self.prepared.device).quantiles.p50

    track_time.unit = "ms"

    def track_peak_memory(self, case, provider):
        from fusebench.metrics import peak_memory

        return peak_memory(self.prepared.call, self.prepared.device)[0]

    track_peak_memory.unit = "bytes"


class ModelAgreement:
    """track_agreement: error / allowed error (<= 1 agrees) against the float64 eager model."""

    params = [names("models"), PROVIDERS]
    param_names = ["case", "provider"]
    timeout = 1200

    def setup(self, case, provider):
        self.prepared = _prepare(case, provider, timed=False)

    def track_agreement(self, case, provider):
        return self.prepared.agreement()[0].ratio

    track_agreement.unit = "error/allowed"
