"""A throwaway git repository for the asv tests: asv files results per commit, and this repository's own
history must never be touched."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=env).stdout.strip()


def repository_with_commits(repo: Path, *messages: str) -> list[str]:
    """A new repository at ``repo`` (branch ``main``) with one empty commit per message; their hashes."""
    repo.mkdir(parents=True)
    _git(repo, "init", "-q", "-b", "main")
    commits = []
    for message in messages:
        _git(repo, "commit", "-q", "--allow-empty", "-m", message)
        commits.append(_git(repo, "rev-parse", "HEAD"))
    return commits
