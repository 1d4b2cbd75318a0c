"""The run store: one folder per run id, atomic writes, and the run's status file.

Every output of a node is written under a name derived from (round, node, item), first to a
temporary sibling and then renamed, so a file that exists is complete and a killed process
leaves at most a stray temporary behind. Nodes skip work whose output already exists.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import re
import socket
import sqlite3
import time
import uuid
from pathlib import Path

from atelier.atomic import write_json_atomic

CHECKPOINT_DB = "checkpoints.sqlite"
LOCK_FILE = "run.lock"
MAX_RUN_ID = 100
# One path component that is the same on every file system: ASCII letters, digits, '-', '_' and
# '.', at most 100 characters, not starting with '.' (no '.', '..' or hidden names) or '-' (no
# id that reads as a command-line option).
_RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,%d}" % (MAX_RUN_ID - 1))
RUN_ID_RULE = f"1 to {MAX_RUN_ID} ASCII letters, digits, '-', '_' or '.', not starting with '.' or '-'"


class RunError(RuntimeError):
    """A run that cannot be started or resumed as asked."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:6]


def check_run_id(run_id) -> str:
    """`run_id` if it is one safe path component (RUN_ID_RULE), else RunError: a run id names a
    folder inside the run folder and must never reach outside it (`..`, `a/b`, `/abs`)."""
    if isinstance(run_id, str) and _RUN_ID.fullmatch(run_id):
        return run_id
    shown = repr(run_id) if not isinstance(run_id, str) or len(run_id) <= 40 else repr(run_id[:40]) + f"... ({len(run_id)} characters)"
    raise RunError(f"bad run id {shown}: a run id is {RUN_ID_RULE}")


# --- disk errors ------------------------------------------------------------------------------

_DISK_ERRNOS = {errno.ENOSPC: "no space left on device", errno.EDQUOT: "disk quota exceeded",
                errno.EROFS: "read-only file system", errno.EACCES: "permission denied", errno.EPERM: "permission denied"}
_SQLITE_DISK = {"database or disk is full": errno.ENOSPC, "attempt to write a readonly database": errno.EROFS}


def _written_file(exc: BaseException, run_dir: Path) -> str | None:
    """The file a failed write was writing, when the OSError does not say (a `write()` that
    ran out of space has no filename): the nearest open file, or else path in the run folder,
    among the locals of the frames the error came through, innermost first."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        values = list(frame.f_locals.values())
        for v in values:
            if isinstance(v, io.IOBase) and isinstance(getattr(v, "name", None), str):
                return v.name
        for v in values:
            if isinstance(v, Path) and _inside(v, run_dir):
                return str(v)
    return None


def _inside(path, folder) -> bool:
    path, folder = os.path.abspath(os.fsdecode(path)), os.path.abspath(folder)
    return path == folder or path.startswith(folder + os.sep)


def disk_error(exc: BaseException, run_dir: Path, run_id: str) -> RunError | None:
    """The one-line RunError for a write the disk refused (full, over quota, read-only, not
    permitted), found anywhere in `exc`'s chain of causes, or None for any other error. SQLite
    (the checkpointer) says so in words, not in errno."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        code = None
        if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
            code = exc.errno
            path = exc.filename or _written_file(exc, run_dir) or run_dir
            if code in (errno.EACCES, errno.EPERM) and not _inside(path, run_dir):
                code = None  # not the run folder's permissions: some other file the run could not use
        elif isinstance(exc, sqlite3.OperationalError):
            code = next((c for words, c in _SQLITE_DISK.items() if words in str(exc)), None)
            path = run_dir / CHECKPOINT_DB
        if code is not None:
            remedy = "free space" if code in (errno.ENOSPC, errno.EDQUOT) else "make the run folder writable"
            return RunError(f"{_DISK_ERRNOS[code]} writing {path}; {remedy} and `atelier resume {run_id}`")
        exc = exc.__cause__ or exc.__context__
    return None


# --- the lock: one process drives a run at a time ---------------------------------------------


class RunLock:
    """An exclusive `fcntl.flock` on <run>/run.lock while a process drives the run. The kernel
    drops it when the process ends however it ends (SIGKILL included), so a lock is never
    stale; the file (never deleted: deleting it would let two processes lock two files) holds
    the pid and host of the last holder, for the refusal message."""

    def __init__(self, run_dir: Path, run_id: str):
        self.run_dir, self.run_id, self.fd = Path(run_dir), run_id, None

    def __enter__(self) -> "RunLock":
        fd = os.open(self.run_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            for attempt in range(20):  # a reader (get_status) holds a shared lock for microseconds
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if attempt == 19:
                        raise RunError(f"run {self.run_id} is in use by {_holder_text(_read_holder(self.run_dir))}; "
                                       f"wait for it to end or stop it, then `atelier resume {self.run_id}`") from None
                    time.sleep(0.025)
            holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode() + b"\n"
            os.pwrite(fd, holder, 0)  # over the last holder's block, then cut: no new block on a full disk
            os.ftruncate(fd, len(holder))
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor releases the flock
            self.fd = None


def _read_holder(run_dir: Path) -> dict:
    try:
        holder = json.loads((run_dir / LOCK_FILE).read_text() or "{}")
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _holder_text(holder: dict) -> str:
    if "pid" not in holder:
        return "another process"
    return f"process {holder['pid']}" + (f" on {holder['host']}" if holder.get("host") else "")


def lock_held(run_dir: Path) -> bool | None:
    """Whether a live process holds the run's lock; None where the run has no lock file (a run
    from before locks) or it cannot be opened."""
    try:
        fd = os.open(run_dir / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also drops the shared lock, if taken


def read_json(path: Path):
    return json.loads(Path(path).read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def round_dir(run_dir: Path, round_no: int) -> Path:
    return run_dir / f"round_{round_no:03d}"


def best_round(state: dict) -> int | None:
    """The round whose adapter is the best so far; None while the base is the best."""
    best = state.get("best_adapter")
    return None if best is None else next((r["round"] for r in state.get("rounds", []) if r["adapter"] == best), None)


def in_run(path: str | None, run_dir: Path) -> str | None:
    """A path a run recorded (an adapter, the report), as it is now: re-rooted at the run folder
    found, absolute, whatever folder the run was launched from or moved to since. A path outside
    the run (no component named like the run) is returned as it is."""
    if path is None:
        return None
    parts = Path(path).parts
    if run_dir.name not in parts:
        return str(path)
    inner = parts[len(parts) - parts[::-1].index(run_dir.name):]
    return str(Path(run_dir).absolute().joinpath(*inner))


def evaluation_dir(run_dir: Path, round_no: int | None) -> Path:
    """Where a round's held-out evaluation (images, judgments.jsonl, metrics.json) is; None = the base's."""
    return run_dir / "base" if round_no is None else round_dir(run_dir, round_no) / "eval"


def guided_base_dir(run_dir: Path) -> Path:
    """The base's held-out evaluation at generation.candidate_guidance_scale: a reference that
    tells whether training beat raising the guidance, never a candidate."""
    return evaluation_dir(run_dir, None) / "at_candidate_guidance"


# --- status -----------------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_status(path: Path) -> dict:
    """status.json as a dict; RunError (one line) when it is unreadable or not a status."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError) as e:  # ValueError: bad JSON, bad UTF-8
        raise RunError(f"{path} is unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})") from None
    if not isinstance(status, dict):
        raise RunError(f"{path} is unreadable (not a JSON object)")
    return status


def set_status(run_dir: Path, **fields) -> None:
    path = run_dir / "status.json"
    try:
        status = _read_status(path) if path.exists() else {}
    except RunError:
        status = {}  # a corrupt status file is replaced, not a reason to stop the run
    status.update(fields, updated=time.strftime("%Y-%m-%dT%H:%M:%S"))
    try:
        write_json_atomic(path, status)
    except OSError as e:
        if e.errno not in (errno.ENOSPC, errno.EDQUOT) or not path.exists():
            raise
        # A full disk has no block for a new file, but the old status has its own: overwrite it
        # in place (a status is far smaller than a block; truncating first would free the block
        # for another writer to take), so that the status can still say why the run stopped.
        (path.parent / f".{path.name}.{os.getpid()}.tmp").unlink(missing_ok=True)  # atomic's partial file
        with open(path, "r+b") as f:
            f.write((json.dumps(status, indent=2) + "\n").encode())
            f.truncate()


def get_status(run_dir: Path) -> dict:
    """The status file, with a 'running' run that no live process drives reported as failed
    (its lock is free; for a run without a lock file, its pid is gone), and an unreadable
    status file reported as state 'unreadable' with the reason in 'error'."""
    path = run_dir / "status.json"
    if not path.exists():
        return {"state": "unknown"}
    try:
        status = _read_status(path)
    except RunError as e:
        return {"state": "unreadable", "error": str(e)}
    if status.get("state") == "running":
        held = lock_held(run_dir)
        if held is None:
            pid = status.get("pid")
            held = isinstance(pid, int) and _alive(pid) and status.get("host", socket.gethostname()) == socket.gethostname()
        if not held:
            status["state"] = "failed"
            status["error"] = status.get("error") or f"the process stopped without finishing; `atelier resume {run_dir.name}` continues it"
    return status


def list_runs(root: Path) -> list[Path]:
    """The runs in `root` (folders with a status file), by name; RunError when `root` is not a folder."""
    if not root.exists():
        return []
    if not root.is_dir():
        raise RunError(f"--run-dir {root} is not a folder")
    try:
        return sorted((p for p in root.iterdir() if (p / "status.json").exists()), key=lambda p: p.name)
    except OSError as e:
        raise RunError(f"cannot list {root}: {e.strerror or e}") from None
