"""``hydra/launcher=local`` and ``hydra/launcher=slurm``: hydra-submitit-launcher's launchers,
made to stop a sweep on one Ctrl-C and to say on the console how each job ended.

    python -m repro.run -m hydra/launcher=local hydra.launcher.gpus_per_node=0 \
      hydra.sweeper.max_batch_size=2 experiment=toy prompt_len=1,5,20,100 seed=0,1

conf/hydra/launcher/local.yaml and slurm.yaml keep submitit's options and point ``_target_``
here. What changes against hydra-submitit-launcher 1.2:

- **Ctrl-C stops the sweep.** submitit's local job controllers start with SIGINT ignored (it
  is ignored in this process while they are spawned): upstream, a controller answers Ctrl-C by
  sending its job a second SIGINT (which aborts the job's checkpoint, as a second Ctrl-C must)
  and SIGKILL a second later. The job itself, in the terminal's process group, gets the Ctrl-C
  and checkpoints (``repro.job.preemption``); the sweep's stop file (``repro.sweep``) tells the
  jobs that were still starting, and the jobs of a SLURM array, which no terminal reaches. No
  new batch starts, the jobs not yet running on SLURM are cancelled, and once the running ones
  have checkpointed the launching process prints one line and exits 130.
- **A job that ends without a result** (it exited before returning: killed, requeued by a
  signal locally, refused to start because the sweep was stopping) no longer ends the sweep in
  submitit's ``UncompletedJobError`` traceback: it is counted (failed; interrupted if its
  ``last/`` is on disk; not started if the sweep is stopping) and the sweep goes on.
- **Each job's outcome is printed** by the launching process as the job ends
  (``<run dir>: finished  score=…``); the job's own output stays in
  ``<sweep dir>/.submitit/<job id>/``.

Hydra imports every plugin module when it starts, so this one imports ``repro`` and submitit
only inside the launcher's methods; without hydra-submitit-launcher installed it defines nothing.
"""

import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from omegaconf import OmegaConf

log = logging.getLogger(__name__)

try:  # an optional dependency (the [slurm] extra; in [dev] too)
    from hydra_plugins.hydra_submitit_launcher import submitit_launcher as upstream
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
except ImportError:  # pragma: no cover
    upstream = None

POLL_S = 0.5  # how often the launching process looks at its jobs


@contextlib.contextmanager
def sigint_ignored() -> Iterator[None]:
    """While inside, SIGINT is ignored: processes started here inherit that (submitit's local
    controllers, and through them their jobs until a job installs its own handler)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


if upstream is not None:

    class StoppableLauncher(upstream.BaseSubmititLauncher):
        """hydra-submitit-launcher's launch, with the sweep's stop and each job's outcome."""

        def _executor(self) -> Any:
            """The submitit executor, built from this launcher's options as upstream does."""
            import submitit

            init_keys = {"max_num_timeout"}
            executor = submitit.AutoExecutor(
                cluster=self._EXECUTOR,
                folder=self.params["submitit_folder"],
                **{f"{self._EXECUTOR}_{k}": v for k, v in self.params.items() if k in init_keys},
            )
            base = set(OmegaConf.structured(BaseQueueConf).keys())
            executor.update_parameters(
                **{
                    k if k in base else f"{self._EXECUTOR}_{k}": v
                    for k, v in self.params.items()
                    if k not in init_keys | {"submitit_folder"}
                }
            )
            return executor

        def launch(
            self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
        ) -> Sequence[JobReturn]:
            from repro.sweep import SweepSummary

            summary = next(
                (c for c in self.hydra_context.callbacks.callbacks if isinstance(c, SweepSummary)),
                None,
            )
            if summary is not None and summary.stop_reason() is not None:
                summary.end_stopped()  # Ctrl-C came between two batches: start no other
            executor = self._executor()
            log.info(
                f"Submitit '{self._EXECUTOR}' sweep output dir : {self.config.hydra.sweep.dir}"
            )
            sweep_dir = Path(str(self.config.hydra.sweep.dir))
            sweep_dir.mkdir(parents=True, exist_ok=True)
            if "mode" in self.config.hydra.sweep:
                os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
            nums = [initial_job_idx + k for k in range(len(job_overrides))]
            params = []
            for num, overrides in zip(nums, job_overrides, strict=True):
                log.info(f"\t#{num} : {' '.join(filter_overrides(overrides))}")
                state = Singleton.get_state()
                params.append((list(overrides), "hydra.sweep.dir", num, f"job_id_for_{num}", state))
            with sigint_ignored():
                jobs = executor.map_array(self, *zip(*params, strict=True))
            returns = self._wait(dict(zip(nums, jobs, strict=True)), job_overrides, nums, summary)
            if summary is not None and summary.stop_reason() is not None:
                summary.end_stopped()
            return [returns[num] for num in nums]

        def _wait(self, jobs: dict, job_overrides, nums, summary) -> dict[int, JobReturn]:
            """Wait for every job of the batch, printing each one's outcome as it ends."""
            overrides_of = dict(zip(nums, job_overrides, strict=True))
            returns: dict[int, JobReturn] = {}
            cancelled = False
            while len(returns) < len(jobs):
                for num, job in jobs.items():
                    if num not in returns and job.done():
                        returns[num] = self._ended(num, job, overrides_of[num], summary)
                stopping = summary is not None and summary.stop_reason() is not None
                if stopping and not cancelled:  # SLURM: what has not started never will
                    cancelled = True
                    for num, job in jobs.items():
                        if num not in returns and job.state == "PENDING":
                            job.cancel(check=False)
                if len(returns) < len(jobs):
                    time.sleep(POLL_S)
            return returns

        def _ended(self, num: int, job: Any, overrides, summary) -> JobReturn:
            """One job has ended: its JobReturn (one of ours if it left none) and its line."""
            from submitit.core.utils import FailedJobError, UncompletedJobError

            from repro.sweep import outcome_line

            ret, problem = None, None
            try:
                ret = job.results()[0]
            except (UncompletedJobError, FailedJobError) as err:
                problem = err
            record = summary.read_record(num) if summary is not None else None
            if record is None and ret is None and problem is not None:
                if summary is not None and summary.stop_reason() is not None:
                    problem = None  # it saw the sweep stopping and did not start: not counted
                else:
                    record = self._no_result(num, job, overrides, problem)
                    if summary is not None:
                        summary.record(num, Path(record["run_dir"]), record)
            if record is not None:
                print(outcome_line(record), flush=True)
            if ret is None:
                ret = JobReturn(
                    overrides=list(overrides), status=JobStatus.COMPLETED, _return_value=None
                )
            return ret

        def _no_result(self, num: int, job: Any, overrides, problem: Exception) -> dict:
            """What to record for a job that left no result: failed, or interrupted when its
            checkpoint is on disk (a local job stopped by SIGTERM exits 75 without a result)."""
            sweep_config = self.hydra_context.config_loader.load_sweep_config(
                self.config, list(overrides)
            )
            sweep = sweep_config.hydra.sweep
            run_dir = (Path(str(sweep.dir)) / str(sweep.subdir)).absolute()
            lines = [x for x in str(problem).splitlines() if x.strip()]
            why = lines[-1].strip() if lines else type(problem).__name__
            log_file = job.paths.stderr
            if (run_dir / "last").is_dir():
                status = "interrupted"
                error = f"ended without a result after a checkpoint; log: {log_file}"
            else:
                status, error = "failed", f"ended without a result ({why}); log: {log_file}"
            return {"job": num, "run_dir": str(run_dir), "status": status, "error": error}

    class LocalLauncher(StoppableLauncher):
        _EXECUTOR = "local"

    class SlurmLauncher(StoppableLauncher):
        _EXECUTOR = "slurm"
