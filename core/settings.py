"""The `RESNET_STUDY_*` environment variables, each declared once: its name, its default and what it does. The CLI's
options (`envvar=`), the service's factory, the stores, the renderers (Kubernetes, Slurm, compose) and docs/laptop.md's
table all take them from here; tests/test_layout.py fails on a `"RESNET_STUDY_...` literal anywhere else.

A plain table rather than pydantic-settings: Typer already reads each option's variable itself (`envvar=`), and most
of these are written into manifests rather than read, so a settings *model* would have nothing to hold.
"""

from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass(frozen=True)
class EnvVar:
    name: str
    default: str | None
    help: str

    def get(self) -> str | None:
        """The variable's value; an empty variable counts as unset (the default)."""
        return os.environ.get(self.name) or self.default

    def __str__(self) -> str:
        return self.name


RESULTS = EnvVar("RESNET_STUDY_RESULTS", "results",
                 "the results store when --results-dir is not given: a folder or s3://bucket/prefix")
DATA = EnvVar("RESNET_STUDY_DATA", "data",
              "the data sets when --data-dir is not given: a folder in torchvision's layouts or s3://bucket/prefix")
CACHE = EnvVar("RESNET_STUDY_CACHE", None,
               "scratch for a bucket's data sets and snapshots (default: $XDG_CACHE_HOME/resnet-study, else "
               "~/.cache/resnet-study)")
API_TOKEN = EnvVar("RESNET_STUDY_API_TOKEN", None,
                   "the results service's bearer token (required off loopback), and the one `--url` sends")
API_TOKEN_FILE = EnvVar("RESNET_STUDY_API_TOKEN_FILE", None,
                        "a file holding that token (a mounted Secret); read before RESNET_STUDY_API_TOKEN")
CPU_REQUEST = EnvVar("RESNET_STUDY_CPU_REQUEST", None,
                     "the task's CPU request in whole CPUs, set by the rendered Kubernetes Job: bounds the threads")
COMMIT = EnvVar("RESNET_STUDY_COMMIT", None,
                "the git commit of the code, where there is no checkout (the image's build argument)")
INDEX_MODE = EnvVar("RESNET_STUDY_INDEX_MODE", None,
                    "what an engine's task index is (\"cell\"), set by the renderers for `sweep cell --index`")

ALL: tuple[EnvVar, ...] = (RESULTS, DATA, CACHE, API_TOKEN, API_TOKEN_FILE, CPU_REQUEST, COMMIT, INDEX_MODE)
