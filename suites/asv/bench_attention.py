"""asv: attention providers on the catalog's cases (real sizes on a GPU, CPU-sized variants otherwise)."""

from fusebench.cases import MODES, names

from ._common import ATTENTION_PROVIDERS, _AgreementBase, _SpeedBase, throughput


class AttentionSpeed(_SpeedBase):
    params = [names("attention"), ATTENTION_PROVIDERS, list(MODES)]
    param_names = ["case", "provider", "mode"]

    def track_tflops(self, case, provider, mode):
        return throughput(self.prepared)

    track_tflops.unit = "TFLOP/s"


class AttentionAgreement(_AgreementBase):
    params = [names("attention"), ATTENTION_PROVIDERS, list(MODES)]
    param_names = ["case", "provider", "mode"]
