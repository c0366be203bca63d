"""asv: the kernels' mutation score (`fusebench mutants`), tracked per commit.

The catalog takes minutes under the CPU interpreter, too long to rerun inside every asv benchmark run, so
this reads the score `fusebench mutants` stored in the results store for the checked-out commit, and skips
(NotImplementedError) when that commit has none yet: run `fusebench mutants`, then `fusebench dashboard
--record`. A score that drops shows in the history as a check that stopped catching a wrong kernel.
"""


class MutationScore:
    params = [["kernels"]]
    param_names = ["catalog"]
    timeout = 120

    def setup(self, catalog):
        from fusebench.device import git_commit
        from fusebench.mutants import latest_score
        from fusebench.store import ResultsStore

        commit, _ = git_commit()
        self.score = latest_score(ResultsStore().read().frame, commit)
        if self.score is None:
            raise NotImplementedError(f"no mutation score stored for commit {commit[:12]}: run `fusebench mutants`")

    def track_mutation_score(self, catalog):
        return self.score

    track_mutation_score.unit = "% of mutants killed"
