"""asv: attention providers on the catalog's cases (real sizes on a GPU, CPU-sized variants otherwise)."""

from ._common import _AgreementBase, _SpeedBase, throughput_benchmark


class AttentionSpeed(_SpeedBase, suite="attention"):
    track_tflops = throughput_benchmark("TFLOP/s")


class AttentionAgreement(_AgreementBase, suite="attention"):
    pass
