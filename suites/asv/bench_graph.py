"""asv: graph aggregation providers on the catalog's graphs."""

from fusebench.cases import MODES, names

from ._common import GRAPH_PROVIDERS, _AgreementBase, _SpeedBase, throughput


class GraphSpeed(_SpeedBase):
    params = [names("graph"), GRAPH_PROVIDERS, list(MODES)]
    param_names = ["case", "provider", "mode"]

    def track_gbps(self, case, provider, mode):
        return throughput(self.prepared)

    track_gbps.unit = "GB/s"


class GraphAgreement(_AgreementBase):
    params = [names("graph"), GRAPH_PROVIDERS, list(MODES)]
    param_names = ["case", "provider", "mode"]
