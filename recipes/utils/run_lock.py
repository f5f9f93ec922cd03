"""One run per output folder: an exclusive lock (`fcntl.flock` on `<output_dir>/.run.lock`) held by the process that
trains, for as long as it lives.

A second run on the same folder is refused with the holder's pid, host, start time and command. The kernel drops the
lock when its holder dies however it dies (kill -9 included), so a lock left by a dead run is simply taken over, with
a warning naming the run it belonged to. The lock belongs to the training process itself, not to a launcher: when
`accelerate launch` is killed and its training process goes on, that process still holds the folder.

    python -m recipes.utils.run_lock outputs/demo     # exit 1 and say who holds it, 0 when the folder is free

(`fcntl.flock` is advisory and local: processes on other machines sharing the folder over NFS are not excluded.)
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

LOCK_FILE = ".run.lock"


class RunLockedError(RuntimeError):
    """The output folder is held by another live run."""


def _locked_error(output_dir: Path, holder: dict) -> RunLockedError:
    return RunLockedError(
        f"{output_dir} is in use by another run ({_describe(holder)}). Wait for it to finish, stop it "
        f"(kill {holder.get('pid', '<pid>')}), or give this run another output_dir."
    )


def _describe(holder: dict) -> str:
    started = holder.get("started")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)) if started else "?"
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, started {when}: {holder.get('command', '?')}"


class RunLock:
    """`with RunLock(output_dir): ...` holds `output_dir` for this process (see the module's docstring)."""

    def __init__(self, output_dir: str | os.PathLike, command: list[str] | None = None):
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_FILE
        self.command = " ".join(command if command is not None else sys.argv)
        self._fd: int | None = None

    def holder(self) -> dict:
        """What the lock file says about its last holder (`{}` when nothing is recorded)."""
        try:
            text = self.path.read_text()
            return json.loads(text) if text.strip() else {}
        except (OSError, json.JSONDecodeError):
            return {}

    def acquire(self) -> RunLock:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise _locked_error(self.output_dir, self.holder()) from None
        previous = self.holder()
        if previous.get("pid") and previous.get("pid") != os.getpid():
            logger.warning(
                "Took over the lock on %s left by a run that is no longer running (%s); its checkpoints are kept.",
                self.output_dir,
                _describe(previous),
            )
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.time(),
            "command": self.command,
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        os.ftruncate(self._fd, 0)  # a finished run leaves nothing to take over
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def check_free(output_dir: str | os.PathLike) -> None:
    """Raise `RunLockedError` while a live run holds `output_dir` (without taking it)."""
    lock = RunLock(output_dir)
    if not lock.path.exists():
        return
    fd = os.open(lock.path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
    except BlockingIOError:
        raise _locked_error(Path(output_dir), lock.holder()) from None
    finally:
        os.close(fd)


if __name__ == "__main__":
    try:
        check_free(sys.argv[1])
    except RunLockedError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
