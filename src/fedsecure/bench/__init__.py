"""``fedsecure bench``: fedsecure's protocols against their peers, measured in the same run.

Timing is never asserted by tests; these are run by hand and their figures are
reported as ratios to the peer measured alongside.
"""

from ._environment import environment
from ._flower import flower_available, run_flower_secaggplus
from ._output import markdown_tables, write_csv, write_json, write_markdown, write_plots
from ._profiles import PROFILES, PeerCase, Profile
from ._runner import ALL_PROTOCOLS, BenchResult, run_benchmark
from ._utility import run_utility

__all__ = [
    "ALL_PROTOCOLS",
    "BenchResult",
    "PROFILES",
    "PeerCase",
    "Profile",
    "environment",
    "flower_available",
    "markdown_tables",
    "run_benchmark",
    "run_flower_secaggplus",
    "run_utility",
    "write_csv",
    "write_json",
    "write_markdown",
    "write_plots",
]
