"""Running a launch command's main in-process, and several processes at once, as the command-line
and multi-process tests do."""

import contextlib
import io
import os
import subprocess
import time
from collections.abc import Callable

from absl import flags
from absl.testing import flagsaver


def run_main(main: Callable[[list[str]], None], **flag_values) -> str:
  """Calls `main` with these flag values set; returns what it printed. Every flag is restored
  afterwards.

  The values are assigned directly rather than through flagsaver's keyword arguments. Those run
  every validator of a flag, including another command's "required" mark on a flag of the same
  name (--config, --task, --out), which a None here would fail.
  """
  flags.FLAGS.mark_as_parsed()
  printed = io.StringIO()
  with flagsaver.flagsaver(), contextlib.redirect_stdout(printed):
    for name, value in flag_values.items():
      flags.FLAGS[name].value = value
    main(['command'])
  return printed.getvalue()


def run_processes(runs: list[tuple[list[str], dict[str, str]]], log_dir: str, timeout: float = 300,
                  cwd: str | None = None) -> list[str]:
  """Runs each (command, environment) at once, as the processes of one job; asserts that all exit 0
  within `timeout` seconds (killing them all if not) and returns what each printed.

  Output goes to files in `log_dir`, not pipes: a pipe that is not read while another process is
  awaited fills up and blocks its writer, which then never reaches the collective the others wait
  in.
  """
  logs = [os.path.join(log_dir, f'process_{i}.log') for i in range(len(runs))]
  processes = []
  for (command, env), log in zip(runs, logs):
    with open(log, 'w', encoding='utf-8') as f:
      processes.append(subprocess.Popen(command, env=env, cwd=cwd, stdout=f,
                                        stderr=subprocess.STDOUT))
  deadline = time.monotonic() + timeout
  while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
    time.sleep(0.1)
  timed_out = [p.poll() is None for p in processes]
  for p in processes:
    if p.poll() is None:
      p.kill()
    p.wait()
  outputs = []
  for log in logs:
    with open(log, encoding='utf-8') as f:
      outputs.append(f.read())
  tails = '\n'.join(output[-3000:] for output in outputs)
  assert not any(timed_out), f'not finished in {timeout} s:\n{tails}'
  assert [p.returncode for p in processes] == [0] * len(runs), tails
  return outputs
