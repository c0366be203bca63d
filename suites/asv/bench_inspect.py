"""asv: registers, spills, shared memory and tensor-core instructions of every shipped kernel configuration,
once per specialization that the case catalog's launches give it (a ``spec`` is one `fusebench inspect` row).

Static figures from `fusebench inspect`, compiled for sm_80 and sm_90 on any machine (no GPU
needed), tracked per commit: a change that adds spills or loses tensor cores shows in the history.
Compilation runs in a fresh process and is cached per (module, target) (see ``_inspect``).
"""

from ._inspect import NO_SPECS, TARGETS, resources, spec_modules

_MODULES = spec_modules()


class KernelResources:
    params = [sorted(_MODULES) or [NO_SPECS], TARGETS]
    param_names = ["spec", "target"]
    timeout = 1800  # the first benchmark of a module compiles all its configurations

    def setup(self, spec, target):
        self.row = resources(spec, target, _MODULES)

    def track_registers(self, spec, target):
        return self.row["registers"]

    track_registers.unit = "registers/thread"

    def track_spill_bytes(self, spec, target):
        return self.row["spill_store_bytes"] + self.row["spill_load_bytes"]

    track_spill_bytes.unit = "bytes"

    def track_shared_memory(self, spec, target):
        return self.row["shared_bytes"] / 1024

    track_shared_memory.unit = "KB"

    def track_tensor_core_instructions(self, spec, target):
        return self.row["hmma"] + self.row["hgmma"]

    track_tensor_core_instructions.unit = "HMMA + HGMMA instructions"

    def track_occupancy(self, spec, target):
        return 100 * self.row["occupancy"]

    track_occupancy.unit = "% of warp slots"

    def track_load128_share(self, spec, target):
        return 100 * self.row["global_loads_128"] / self.row["global_loads"] if self.row["global_loads"] else 0.0

    track_load128_share.unit = "% of global loads"

    # The main loop's static cost (fusebench/sass_cost.py).
    def track_loop_instructions(self, spec, target):
        return self.row["loop_instructions"]

    track_loop_instructions.unit = "instructions per main-loop iteration"

    def track_instructions_per_element(self, spec, target):
        return self.row["per_element"]

    track_instructions_per_element.unit = "thread-instructions per score or edge-feature element"

    def track_issue_clocks(self, spec, target):
        return self.row["issue_clocks"]

    track_issue_clocks.unit = "clocks per 128x128 tile"
