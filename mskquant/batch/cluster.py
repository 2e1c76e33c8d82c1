"""Where the cases run: a Dask ``LocalCluster`` sized to this machine, or an existing cluster.

``--scheduler tcp://host:8786`` (or ``DASK_SCHEDULER_ADDRESS``) sends the tasks to a running
``dask scheduler`` whose ``dask worker`` processes have the project's environment and see the
same paths. Locally each worker process gets ``threads_per_worker`` case slots (the resource
``case``) plus one thread that reads the next case while a case computes; a cluster's workers
do the same when started with ``--nthreads 2 --resources case=1``. Dask is imported here only.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Optional

from ..errors import MSKQuantError

CASE_RESOURCE = "case"


@dataclass
class Cluster:
    client: object
    own_client: bool
    cluster: Optional[object]
    slots: int  # cases that can compute at once
    split_reads: bool  # workers have a spare thread and the 'case' resource: read tasks run beside cases
    workers: int

    def close(self) -> None:
        if self.own_client:
            try:
                self.client.close()
            finally:
                if self.cluster is not None:
                    self.cluster.close()


def import_distributed():
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise MSKQuantError("'mskquant batch' needs Dask: install it with pip install 'dask[distributed]' (the "
                            "project environment has it: bash scripts/setup_env.sh).") from None
    return distributed


def open_cluster(client=None, scheduler: Optional[str] = None, workers: Optional[int] = None,
                 threads_per_worker: int = 1, n_cases: int = 1) -> Cluster:
    distributed = import_distributed()
    if client is None:
        address = scheduler or os.environ.get("DASK_SCHEDULER_ADDRESS")
        if address:
            try:
                client = distributed.Client(address, timeout="30s")
            except (OSError, TimeoutError) as exc:
                raise MSKQuantError(f"Cannot reach the Dask scheduler at {address} ({exc}): start it with 'dask "
                                    f"scheduler' and its workers with 'dask worker {address}'.") from None
            return _describe(client, True, None)
        return _local(distributed, workers, threads_per_worker, n_cases)
    return _describe(client, False, None)


def _local(distributed, workers, threads_per_worker, n_cases) -> Cluster:
    import dask

    cpus = os.cpu_count() or 1
    # default: a worker per 2 cores, its network on 2 threads (on 2 cores 1 worker did 630 cases/h,
    # 2 workers of 1 thread 430: benchmarks/bench_batch.py)
    n = max(1, workers or min(max(1, cpus // 2), n_cases))
    threads = max(1, int(threads_per_worker))
    per_worker = str(max(1, cpus // (n * threads)))  # BLAS / torch threads of each case
    config = {f"distributed.nanny.pre-spawn-environ.{k}": per_worker
              for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    config["distributed.worker.profile.enabled"] = False  # no dashboard: its stack sampling would only cost time
    with dask.config.set(config):
        cluster = distributed.LocalCluster(n_workers=n, threads_per_worker=threads + 1, processes=True,
                                           resources={CASE_RESOURCE: threads}, dashboard_address=None,
                                           silence_logs=logging.ERROR)
    client = distributed.Client(cluster)
    return _describe(client, True, cluster)


def _describe(client, own: bool, cluster) -> Cluster:
    client.wait_for_workers(1, timeout=120)
    info = client.scheduler_info()["workers"]
    have = [w.get("resources", {}).get(CASE_RESOURCE) for w in info.values()]
    split = bool(have) and all(have)
    slots = int(sum(have)) if split else sum(int(w.get("nthreads", 1)) for w in info.values())
    return Cluster(client, own, cluster, max(slots, 1), split, len(info))
