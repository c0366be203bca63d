"""asv: graph aggregation providers on the catalog's graphs."""

from ._common import _AgreementBase, _SpeedBase, throughput_benchmark


class GraphSpeed(_SpeedBase, suite="graph"):
    track_gbps = throughput_benchmark("GB/s")


class GraphAgreement(_AgreementBase, suite="graph"):
    pass
