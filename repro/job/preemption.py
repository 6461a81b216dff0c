"""A preemption signal becomes a checkpoint and an exit code a scheduler can requeue on.

SIGTERM/SIGUSR1/SIGUSR2/SIGINT set the job's ``StopFlag``; the training loop checkpoints
``last/`` after its current step and stops; the entry (``repro.run``, the packed launcher) then
hands the signal on to the handler it replaced and exits 75 (130 after Ctrl-C). Cluster set-up:
docs/cluster.md.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from typing import Any

from repro.trainer import StopFlag

# Exit code of a run stopped by a preemption signal after checkpointing: sysexits' EX_TEMPFAIL
# ("try again later"). Clusters can requeue on it (slurm.conf RequeueExit=75); see docs/cluster.md.
EXIT_REQUEUE = 75
# SIGTERM: SLURM's preemption / scancel; SIGUSR1: `sbatch --signal=USR1@120` before the time
# limit; SIGUSR2: submitit's default preemption/timeout signal (hydra/launcher=slurm).
# SIGINT (Ctrl-C) does what they do — checkpoint, one line, resumable — but exits 130 (128 + 2,
# the shell's code for an interrupt) and is not handed on; a second Ctrl-C aborts at once.
PREEMPTION_SIGNALS = ("SIGTERM", "SIGUSR1", "SIGUSR2", "SIGINT")
EXIT_INTERRUPT = 130


class PreemptionHandler:
    """Turns a preemption signal into a set ``StopFlag``: the loop checkpoints ``last/`` and stops.

    The signal handler itself only sets the flag (no I/O inside a handler); the training loop
    sees it after the current step. ``forward`` then hands the signal to whatever handler was
    installed before ours — under hydra-submitit-launcher that is submitit's, which requeues the
    job — once our checkpoint is on disk.
    """

    def __init__(self, stop: StopFlag):
        self.stop = stop
        self.signum: int | None = None
        self.previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame) -> None:
        if self.signum is None:
            self.signum = signum
            self.stop.set(f"received {signal.Signals(signum).name}")
        elif signum == signal.SIGINT:  # Ctrl-C twice: stop now, without a checkpoint
            raise KeyboardInterrupt

    @property
    def exit_code(self) -> int:
        """130 after Ctrl-C, else 75 (requeue)."""
        return EXIT_INTERRUPT if self.signum == signal.SIGINT else EXIT_REQUEUE

    def forward(self) -> None:
        """Call the handler ours replaced for the received signal (e.g. submitit's requeue);
        never for Ctrl-C, whose default handler would raise KeyboardInterrupt."""
        previous = self.previous.get(self.signum)
        if callable(previous) and self.signum != signal.SIGINT:
            previous(self.signum, None)


@contextlib.contextmanager
def preemption_signals(stop: StopFlag) -> Iterator[PreemptionHandler]:
    """While inside, SIGTERM/SIGUSR1/SIGUSR2/SIGINT set ``stop`` instead of killing the process.

    Left by ``sys.exit`` after a signal (exit 75: the checkpoint is on disk), the process is
    leaving: SIGTERM/SIGUSR1/SIGUSR2 are then ignored rather than given back their default
    (death by signal), so a repeated one during Hydra's unwinding or the interpreter's shutdown
    (which resets Python handlers to the default, not ignored signals) cannot turn exit 75 into
    a kill that no requeue rule matches. A second Ctrl-C still aborts.
    """
    handler = PreemptionHandler(stop)
    if threading.current_thread() is not threading.main_thread():
        yield handler  # signal handlers can only be installed from the main thread
        return
    for name in PREEMPTION_SIGNALS:
        signum = getattr(signal, name, None)
        if signum is not None:
            handler.previous[signum] = signal.signal(signum, handler)
    leaving = False
    try:
        yield handler
    except SystemExit:
        leaving = handler.signum is not None
        raise
    finally:
        for signum, previous in handler.previous.items():
            if leaving:
                previous = handler if signum == signal.SIGINT else signal.SIG_IGN
            signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
