"""One run per output folder (recipes/utils/run_lock.py): two runs on one folder, a launcher killed with -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recipes.utils.run_lock import LOCK_FILE, RunLock, RunLockedError, check_free
from tests.runs import ENV, REPO, recipe_args
from tests.tiny import save_tiny_pretrained_towers, save_tiny_retrieval_dataset

HOLD = "import sys, time; from recipes.utils.run_lock import RunLock; RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(600)"  # noqa: E501


def wait_for_holder(folder: Path, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        holder = RunLock(folder).holder()
        if holder.get("pid"):
            return holder
        time.sleep(0.2)
    raise AssertionError(f"nothing took the lock of {folder} in {timeout} s")


def test_a_held_folder_is_refused_naming_the_holder_and_a_dead_holders_lock_is_taken_over(tmp_path, caplog):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunLockedError, match=f"in use by another run \\(pid {holder.pid} on "):
            RunLock(tmp_path).acquire()
        with pytest.raises(RunLockedError, match=f"kill {holder.pid}"):
            check_free(tmp_path)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    check_free(tmp_path)  # the kernel dropped the dead holder's lock
    with caplog.at_level("WARNING"), RunLock(tmp_path, ["me"]) as lock:
        assert lock.holder()["pid"] == os.getpid() and lock.holder()["command"] == "me"
    assert f"left by a run that is no longer running (pid {holder.pid}" in caplog.text
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: nothing left to take over
    with caplog.at_level("WARNING"):
        caplog.clear()
        RunLock(tmp_path).acquire().release()
    assert "no longer running" not in caplog.text


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    root = tmp_path_factory.mktemp("lock_assets")
    return {
        **save_tiny_pretrained_towers(root / "towers"),
        "dataset": save_tiny_retrieval_dataset(root / "data"),
    }


def recipe(assets, output_dir: Path, *extra: str) -> list[str]:
    return ["recipes/train_retrieval.py", *recipe_args(assets, output_dir, *extra)]


def test_a_second_run_on_the_folder_of_a_run_whose_launcher_was_killed_is_refused(assets, tmp_path):
    output_dir = tmp_path / "run"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
         str(REPO / "recipes/accelerate_configs/single_process.yaml"),
         *recipe(assets, output_dir, "--num_train_epochs", "100000", "--eval_strategy", "no",
                 "--save_strategy", "no", "--make_plots", "false")],
        cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    trainer_pid = None
    try:
        holder = wait_for_holder(output_dir)
        trainer_pid = holder["pid"]
        assert trainer_pid != launcher.pid and "train_retrieval.py" in holder["command"]
        os.kill(launcher.pid, signal.SIGKILL)  # the launcher dies; its training process goes on
        launcher.wait()
        time.sleep(1)
        os.kill(trainer_pid, 0)  # still alive, still holding the folder
        second = subprocess.run(
            [sys.executable, *recipe(assets, output_dir, "--num_train_epochs", "1")],
            cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert second.returncode != 0
        assert f"is in use by another run (pid {trainer_pid} on " in second.stderr
        assert f"kill {trainer_pid}" in second.stderr
        assert not (output_dir / "eval_results.json").exists()  # the second run wrote nothing
        demo = subprocess.run(
            ["bash", "scripts/demo.sh"], cwd=REPO, env={**ENV, "OUT": str(output_dir), "FRESH": "1"},
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert demo.returncode != 0 and f"pid {trainer_pid}" in demo.stderr and output_dir.exists()
    finally:  # the launcher's process group holds the trainer too, whatever happened above
        try:
            os.killpg(launcher.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        launcher.wait()
    time.sleep(0.5)
    third = subprocess.run(
        [sys.executable, *recipe(assets, output_dir, "--num_train_epochs", "1")],
        cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert third.returncode == 0, third.stderr[-3000:]
    assert f"left by a run that is no longer running (pid {trainer_pid}" in third.stderr
    assert json.loads((output_dir / "eval_results.json").read_text())["results"]["test"]
