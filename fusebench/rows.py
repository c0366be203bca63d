"""The results store's rows of a run: one per (case, provider, mode, metric), with the device identity.

Agreement always; time, throughput, share of peak and memory only for a result that agreed and was measured.
"""

from __future__ import annotations

import math

from fusebench.device import DeviceIdentity
from fusebench.measure import RATE_METRICS, Result
from fusebench.metrics import Quantiles

__all__ = ["identity_columns", "rows_for", "ceiling_rows"]


def identity_columns(ident: DeviceIdentity) -> dict:
    """The store's device columns of ``ident`` (``device_kind``, ``device``, versions, commit, host, ...)."""
    d = ident.as_dict()
    d["device_kind"], d["device"] = d.pop("kind"), d.pop("name")
    return d


def _quantile_columns(q: Quantiles) -> dict:
    return {"p20": q.p20, "p50": q.p50, "p80": q.p80}


def rows_for(result: Result, ident: DeviceIdentity, run_id: str, timestamp: str) -> list[dict]:
    """The store rows of one result: agreement always; time, throughput, share of peak and memory only
    for a result that agreed and was measured."""
    case = result.case
    base = {"run_id": run_id, "timestamp": timestamp, "suite": case.suite, "case": case.name, "size": case.size,
            "shape": case.shape_text(), "axis_value": case.axis_value, "provider": result.provider,
            "mode": result.mode, "dtype": result.dtype, "agreement": result.agreement, "agrees": result.agrees,
            "note": result.note, "gold": result.gold, **identity_columns(ident)}
    if result.status not in ("measured", "interpreted", "disagrees"):
        return []
    rows = [{**base, "metric": "agreement", "unit": "error/allowed",
             **_quantile_columns(Quantiles.constant(result.agreement)), "samples": 1}]
    if result.status != "measured":
        return rows
    timed = {**base, "threads": result.threads, "load_before": result.load[0], "load_after": result.load[1],
             "flags": result.flags}
    rows.append({**timed, "metric": "time", "unit": "ms", **_quantile_columns(result.time_ms),
                 "samples": result.samples, "repeats": ";".join(repr(float(m)) for m in result.repeats)})
    if result.graph_ms is not None:
        rows.append({**timed, "metric": "time_cudagraph", "unit": "ms", **_quantile_columns(result.graph_ms),
                     "samples": 1, "note": "do_bench_cudagraph replay (no launch overhead)"})
    if result.rate is not None:
        rows.append({**timed, "metric": RATE_METRICS[result.rate_unit], "unit": result.rate_unit,
                     **_quantile_columns(result.rate), "samples": result.samples})
    if not math.isnan(result.share):
        rows.append({**timed, "metric": "peak_share", "unit": "%", "note": result.share_source,
                     **_quantile_columns(Quantiles.constant(result.share)), "samples": result.samples})
    rows.append({**timed, "metric": "memory", "unit": "bytes", "note": result.memory_note,
                 **_quantile_columns(Quantiles.constant(float(result.memory))), "samples": 1})
    return rows


def ceiling_rows(ceilings: dict, ident: DeviceIdentity, run_id: str, timestamp: str) -> list[dict]:
    """The device's measured ceilings (bandwidth, matmul peaks) as rows of the pseudo-case ``device-ceiling``."""
    rows = []
    for key, (value, how) in ceilings.items():
        metric, unit = ("bandwidth", "GB/s") if key == "bandwidth_gbps" else (key.replace(":", "-"), "TFLOP/s")
        rows.append({"run_id": run_id, "timestamp": timestamp, "suite": "ceiling", "case": "device-ceiling",
                     "size": "gpu", "shape": "", "axis_value": "", "provider": "torch", "mode": "measured",
                     "dtype": "", "metric": metric, "unit": unit, **_quantile_columns(Quantiles.constant(value)),
                     "samples": 1, "note": how, **identity_columns(ident)})
    return rows
