"""Process bookkeeping of the local stack, without starting any service."""

from __future__ import annotations

import subprocess
import sys

from feature_store.stack import services


def test_a_running_child_is_not_reported_as_exited_and_a_finished_one_is() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    services._CHILDREN[child.pid] = child
    try:
        assert not services._exited(child.pid)
        child.kill()
        child.wait()
        assert services._exited(child.pid)
    finally:
        services._CHILDREN.pop(child.pid, None)


def test_an_unknown_pid_is_judged_by_the_process_table() -> None:
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()

    assert services._exited(done.pid)
