"""Data-parallel training over MPI (mpi4py): detection, launch, and the collectives a step needs.

One process per rank, each with the whole network. Per step of global batch ``B`` on ``N``
ranks, rank ``r`` takes images ``r, r+N, r+2N, ...`` of the batch (``B/N`` each), runs
forward and backward, and the flat gradient array is summed with one in-place
``Allreduce`` and divided by ``N``: the mean over the global batch, as one process
computes it. Batch norm is synchronized: the per-channel sums of the forward and of the
backward are summed over ranks, so the statistics are those of the global batch and
``N`` ranks compute what one process computes (up to float summation order). Rank 0
broadcasts the initial parameters, writes every file (checkpoints, history, curves) and
prints; each rank's dropout and augmentation draw from their own generators.

``mpi4py`` is imported only when the process runs under an MPI launcher with more than
one rank (:func:`world`); a plain ``cnnc train`` never loads it. ``cnnc train --workers N``
re-launches itself as ``mpiexec -n N python -m mpi4py -m cnnc train ...`` (the
``-m mpi4py`` form turns an exception on one rank into an abort of the whole job).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..errors import UsageError

INSTALL_HINT = 'install the MPI extra: pip install "cnnc[mpi]" (mpi4py and the mpich wheel)'
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "SLURM_NTASKS")
_LOCAL_SIZE_VARS = ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE")
RANK_PID_DIR = "CNNC_RANK_PID_DIR"  # where each rank writes its pid, for the launcher's messages


def _first_count(names: tuple[str, ...]) -> int | None:
    """The first of these launcher variables that holds a count (Slurm may write ``4(x2)``)."""
    for var in names:
        value = os.environ.get(var)
        if value:
            try:
                return max(1, int(value.split("(")[0].split(",")[0]))
            except ValueError:
                continue
    return None


def launched_size() -> int:
    """How many ranks the MPI launcher started, from its environment (1 when none)."""
    return _first_count(_SIZE_VARS) or 1


def local_ranks() -> int:
    """Ranks on this machine (for the default thread count), 1 when unknown."""
    return _first_count(_LOCAL_SIZE_VARS) or launched_size()


def threads_per_rank() -> int:
    """cores / ranks on this machine, at least 1."""
    return max(1, (os.cpu_count() or 1) // local_ranks())


@dataclass
class World:
    """The communicator a training run uses: rank, size, and the few collectives it needs."""

    rank: int = 0
    size: int = 1
    comm: Any = None  # mpi4py's COMM_WORLD when size > 1

    @property
    def is_root(self) -> bool:
        return self.rank == 0

    def allreduce_sum(self, a: np.ndarray) -> None:
        """In-place sum over ranks of a contiguous array."""
        if self.size > 1:
            from mpi4py import MPI

            self.comm.Allreduce(MPI.IN_PLACE, a, op=MPI.SUM)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on any rank."""
        if self.size == 1:
            return bool(flag)
        from mpi4py import MPI

        buf = np.array([1 if flag else 0], np.int32)
        self.comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
        return bool(buf[0])

    def broadcast(self, a: np.ndarray) -> None:
        """Rank 0's contents of ``a`` on every rank (in place)."""
        if self.size > 1:
            self.comm.Bcast(a, root=0)

    def broadcast_text(self, text: str | None) -> str | None:
        """Rank 0's string on every rank (a small value: a run folder's name)."""
        if self.size == 1:
            return text
        data = np.frombuffer((text or "").encode("utf-8"), np.uint8) if self.is_root else None
        n = np.array([data.size if self.is_root else 0, 1 if text is not None else 0], np.int64)
        self.comm.Bcast(n, root=0)
        buf = data.copy() if self.is_root else np.empty(int(n[0]), np.uint8)
        self.comm.Bcast(buf, root=0)
        return buf.tobytes().decode("utf-8") if n[1] else None


_WORLD: World | None = None


def world() -> World:
    """This process's place in the job: a size-1 world unless an MPI launcher started several
    ranks, in which case mpi4py is imported (UsageError with the install hint if it is missing)."""
    global _WORLD
    if _WORLD is not None:
        return _WORLD
    if launched_size() <= 1:
        _WORLD = World()
        return _WORLD
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError("this process was started by an MPI launcher, but mpi4py is not installed",
                         hint=INSTALL_HINT) from None
    comm = MPI.COMM_WORLD
    _WORLD = World(comm.Get_rank(), comm.Get_size(), comm if comm.Get_size() > 1 else None)
    pid_dir = os.environ.get(RANK_PID_DIR)
    if pid_dir:
        try:
            Path(pid_dir, f"rank{_WORLD.rank}").write_text(str(os.getpid()))
        except OSError:
            pass
    return _WORLD


# ---------------------------------------------------------------------------------------
# the launcher: cnnc train --workers N
# ---------------------------------------------------------------------------------------

# MPICH's Hydra prints a banner on stdout when a rank dies, and a line on stderr for each rank
# that aborts: cnnc replaces them with one line of its own
_BANNER = re.compile(r"^(=+\s*$|=\s{2,}|YOUR APPLICATION TERMINATED|This typically refers to a problem"
                     r"|Please see the FAQ page|Abort\(\d+\) on node \d+|\[mpiexec@)")
_PID_EXIT = re.compile(r"PID\s+(\d+)\s+RUNNING AT\s+(\S+)\s*\n=\s+EXIT CODE:\s*(\d+)")
_EXIT_STRING = re.compile(r"EXIT STRING:\s*(.+?)\s*$", re.M)


def find_mpiexec() -> str | None:
    """The mpiexec beside this Python (a venv with the mpich wheel), else the one on PATH."""
    here = Path(sys.executable).parent / "mpiexec"
    if here.is_file() and os.access(here, os.X_OK):
        return str(here)
    return shutil.which("mpiexec")


def launch(workers: int, argv: Sequence[str], checkpoint_hint: str | None = None) -> int:
    """Run ``cnnc`` with ``argv`` (without --workers) on ``workers`` local ranks; returns the
    job's exit status, after a one-line message naming the rank when one failed."""
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise UsageError("--workers needs mpi4py and an MPI launcher", hint=INSTALL_HINT) from None
    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise UsageError("--workers needs mpiexec, which was not found", hint=INSTALL_HINT)
    threads = max(1, (os.cpu_count() or 1) // workers)
    given = os.environ.get(RANK_PID_DIR)  # a caller (a test) that wants to find the ranks
    pid_dir = given or tempfile.mkdtemp(prefix="cnnc-ranks-")
    env = dict(os.environ, NUMBA_NUM_THREADS=str(threads), CNNC_THREADS=str(threads),
               **{RANK_PID_DIR: pid_dir})
    cmd = [mpiexec, "-n", str(workers), sys.executable, "-m", "mpi4py", "-m", "cnnc", *argv]
    # its own session: a Ctrl-C reaches only this process, which passes one on per press
    # (mpiexec forwards it to every rank; a second one aborts the job at once)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    captured, captured_err = bytearray(), bytearray()
    previous = signal.signal(signal.SIGINT, lambda *_: proc.send_signal(signal.SIGINT))
    try:
        import threading

        errors = threading.Thread(target=_forward, args=(proc.stderr, sys.stderr.buffer, captured_err),
                                  daemon=True)
        errors.start()
        _forward(proc.stdout, sys.stdout.buffer, captured)
        code = proc.wait()
        errors.join(timeout=5)
    finally:
        signal.signal(signal.SIGINT, previous)
    if code not in (0, 130):
        message = _failure_message((captured + captured_err).decode("utf-8", "replace"),
                                   _rank_pids(pid_dir), code)
        if message:
            saved = _last_checkpoint(checkpoint_hint)
            hint = f"; the last checkpoint ({saved}) is intact" if saved else ""
            sys.stderr.write(f"error: {message}{hint}\n")
    if not given:
        shutil.rmtree(pid_dir, ignore_errors=True)
    return 130 if code == 130 else (0 if code == 0 else 1)


def _last_checkpoint(run: str | None) -> str | None:
    if not run:
        return None
    p = Path(run)
    p = p / "checkpoint.npz" if p.is_dir() else p
    return str(p) if p.is_file() else None


def _forward(stream, out, captured: bytearray) -> None:
    """Copy one of the job's streams to ours as it comes (progress bars included), leaving
    out the launcher's termination lines, which :func:`_failure_message` replaces."""
    fd = stream.fileno()
    pending = b""
    while True:
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        captured += chunk
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not _BANNER.match(line.decode("utf-8", "replace")):
                out.write(line + b"\n")
        if pending and not _BANNER.match(pending.decode("utf-8", "replace")[:12]) \
                and not pending.startswith((b"=", b"A", b"[")):
            out.write(pending)  # a progress bar's \r-line: show it now
            pending = b""
        out.flush()
    if pending and not _BANNER.match(pending.decode("utf-8", "replace")):
        out.write(pending)
        out.flush()


def _rank_pids(pid_dir: str) -> dict[int, int]:
    out = {}
    for p in Path(pid_dir).glob("rank*"):
        try:
            out[int(p.read_text())] = int(p.name[4:])
        except (OSError, ValueError):
            continue
    return out


def _failure_message(text: str, ranks: dict[int, int], code: int) -> str | None:
    """One line naming the rank that ended the job, from the launcher's banner."""
    m = _PID_EXIT.search(text)
    if m is None:
        return None if re.search(r"Abort\(\d+\)|MPI_Abort", text) else f"the MPI job ended with status {code}"
    pid, host, status = int(m.group(1)), m.group(2), int(m.group(3))
    how = _EXIT_STRING.search(text)
    what = how.group(1) if how else f"exit status {status}"
    if what.lower().startswith("killed"):
        what = "killed by a signal (" + what.split("(")[-1].rstrip(")") + ")" if "(" in what else what
    rank = ranks.get(pid)
    who = f"rank {rank} (pid {pid} on {host})" if rank is not None else f"a rank (pid {pid} on {host})"
    return f"{who} ended: {what}; every rank was stopped"
