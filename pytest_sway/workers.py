"""xdist workers: how many threads each one's torch uses, and the base answers they share.

Plain functions (no pytest): the plugin calls them from its hooks.

Each xdist worker is a process whose torch would use every core; on a machine with as many cores as
workers, two workers then run four or more busy threads on two cores, and the demo took 2.2x the
serial wall time with ``-n 2`` (``benchmarks/bench_workers.py``). A worker therefore gets the cores
divided among the workers, unless the user chose (``OMP_NUM_THREADS`` set).

Workers also share the base model's answers through a run-scoped folder of the disk cache
(``backends/cache.py``: entries are written to a temporary name and renamed, and a torn or foreign
file is a miss), unless ``--sway-cache-dir`` names one already: a prompt's base answer that one
worker computed is read, not recomputed, by a worker that needs it later.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import MutableMapping
from pathlib import Path

#: The environment variable that says the user chose the thread count.
THREADS_VARIABLE = "OMP_NUM_THREADS"
#: The key of the shared folder in xdist's ``workerinput``.
SHARED_CACHE_KEY = "sway_shared_cache"
#: The key of a worker's forward-pass counts in xdist's ``workeroutput``.
FORWARDS_KEY = "sway_forwards"
#: The process name of a run without workers.
MAIN = "main"
#: The entry of the report's forward-pass objects that sums every process.
TOTAL = "total"


def worker_threads(cpus: int | None, workers: int, environ: MutableMapping[str, str]) -> int | None:
    """Threads for one of ``workers`` workers on ``cpus`` cores; None where the user set
    ``OMP_NUM_THREADS`` (theirs stands) or there is only one worker."""
    if THREADS_VARIABLE in environ or workers <= 1:
        return None
    return max(1, (cpus or 1) // workers)


def limit_threads(threads: int, environ: MutableMapping[str, str], modules) -> None:
    """Apply ``threads``: for a torch not imported yet through the environment, for one already
    imported (a conftest may have) through ``torch.set_num_threads``."""
    environ[THREADS_VARIABLE] = str(threads)
    torch = modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def available_cpus() -> int | None:
    """The cores this process may run on (its affinity, where the platform says), else all of them."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count()


def as_worker(workerinput: dict, settings):
    """A worker's settings, and its threads: its share of the cores (applied here), and the run's
    shared folder of base answers as its cache folder where the user named none."""
    threads = worker_threads(available_cpus(), int(workerinput.get("workercount", 1)), os.environ)
    if threads is not None:
        limit_threads(threads, os.environ, sys.modules)
    shared = workerinput.get(SHARED_CACHE_KEY)
    if shared and settings.cache_dir is None:
        settings = dataclasses.replace(settings, cache_dir=Path(shared))
    return settings


def check_workers(option, settings) -> str | None:
    """Why this run cannot use xdist workers, or None. The vllm backend: each worker would start its
    own engine (about a minute and 2.5 GB here for a 135M model; on a GPU, each engine reserves its
    ``gpu_memory_utilization`` of the same devices), and one engine already batches every request."""
    workers = getattr(option, "numprocesses", None)
    if settings.backend_name != "vllm" or workers in (None, 0, "0") or getattr(option, "dist", "no") == "no":
        return None
    return (
        f"-n {workers} would start one vLLM engine per worker, each loading the model and reserving its share of "
        "the devices' memory, where one engine batches every request: run the vllm backend without -n (or -n 0)"
    )


def process_name(workerinput: dict | None) -> str:
    """The name this process's counts go under: the xdist worker's id, or ``main``."""
    return str(workerinput["workerid"]) if workerinput else MAIN


def forward_counts(backend) -> dict[str, dict[str, int] | None] | None:
    """What ``backend`` forwarded: ``{"passes": {"question/variant": sequences}, "calls": {"variant":
    forward calls}}`` (``calls`` None where the backend does not count them: vllm); None for a backend
    that counts nothing (the dummy backend, most factories of one's own)."""
    forwarded = getattr(backend, "forwarded", None)
    if forwarded is None:
        return None
    calls = getattr(backend, "forward_calls", None)
    return {
        "passes": {f"{question}/{variant}": int(n) for (question, variant), n in sorted(forwarded.items())},
        "calls": None if calls is None else {str(variant): int(n) for variant, n in sorted(calls.items())},
    }


def record_forwards(forwards: dict, backend, workerinput: dict | None) -> None:
    """Keep what ``backend`` forwarded in ``forwards`` (the run's counts by process), under this
    process's name; nothing for a backend that counts nothing."""
    counts = forward_counts(backend)
    if counts is not None:
        forwards[process_name(workerinput)] = counts


def collect_forwards(forwards: dict, workeroutput: dict | None) -> None:
    """The controller's side: add the counts a finished worker sent (none from a worker that crashed,
    or that never built its backend)."""
    forwards.update((workeroutput or {}).get(FORWARDS_KEY) or {})


def forward_report(by_process: dict[str, dict]) -> tuple[dict | None, dict | None]:
    """The report's ``forward_passes`` and ``forward_calls``: each process's counts (``forward_counts``'
    ``passes`` and ``calls``) by its name, and their ``total``; None where no process counted any."""
    out: list[dict | None] = []
    for part in ("passes", "calls"):
        counted = {name: counts[part] for name, counts in sorted(by_process.items()) if counts.get(part) is not None}
        if not counted:
            out.append(None)
            continue
        total: dict[str, int] = {}
        for counts in counted.values():
            for key, n in counts.items():
                total[key] = total.get(key, 0) + n
        out.append({**counted, TOTAL: dict(sorted(total.items()))})
    return out[0], out[1]
