"""Run a command and write its wall time and peak RSS to a JSON file: ``peak_rss.py OUT CMD ARGS...``.

A child's ``ru_maxrss`` includes the memory of the process that forked it (counted until ``exec``), so a
benchmark that has imported torch would charge its own few hundred MB to every command it measures. This
launcher is started fresh, stays small, and measures its own child.
"""

import json
import os
import shutil
import sys
import time


def main() -> None:
    out, command = sys.argv[1], sys.argv[2:]
    executable = shutil.which(command[0]) or command[0]
    started = time.perf_counter()
    pid = os.posix_spawn(executable, command, os.environ)
    _, status, usage = os.wait4(pid, 0)
    result = {
        "wall_s": time.perf_counter() - started,
        "peak_rss_mib": usage.ru_maxrss / 1024,
        "exit_code": os.waitstatus_to_exitcode(status),
    }
    with open(out, "w") as handle:
        json.dump(result, handle)


if __name__ == "__main__":
    main()
