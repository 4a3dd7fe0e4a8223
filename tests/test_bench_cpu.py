"""bench/cpu.py: a process tree's CPU time counts a child that has exited, so it never goes down."""
from __future__ import annotations

import os
import subprocess
import sys

from bench.cpu import tree, tree_cpu_seconds

BURN = "import time\nwhile time.process_time() < 0.3:\n    pass\n"


def test_a_tree_keeps_the_cpu_of_a_child_that_exited():
    me = os.getpid()
    before = tree_cpu_seconds(me)
    child = subprocess.Popen([sys.executable, "-c", BURN])
    assert child.pid in tree(me) and tree(me)[-1] == me  # deepest first: the root last
    child.wait()  # exited and reaped: its time is now the parent's cutime
    after = tree_cpu_seconds(me)
    assert child.pid not in tree(me)
    assert after - before >= 0.3 - 1 / os.sysconf("SC_CLK_TCK")
