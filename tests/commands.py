"""Running a launch command's main in-process, and several processes at once, as the command-line
and multi-process tests do."""

import contextlib
import io
import os
import socket
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


def free_port() -> int:
  """A TCP port free on localhost now (for a jax.distributed coordinator)."""
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def device_env(devices: int) -> dict[str, str]:
  """This process's environment for a command with `devices` CPU devices, not conftest's 8
  simulated ones: a command-line run whose test is not about sharding starts, steps and saves
  sooner on one. conftest's other XLA flags stay."""
  kept = [flag for flag in os.environ.get('XLA_FLAGS', '').split()
          if not flag.startswith('--xla_force_host_platform_device_count=')]
  return {**os.environ, 'JAX_PLATFORMS': 'cpu',
          'XLA_FLAGS': ' '.join([*kept, f'--xla_force_host_platform_device_count={devices}'])}


def process_env(port: int, num_processes: int, process_id: int, devices: int = 2) -> dict[str, str]:
  """The environment of process `process_id` of a jax.distributed job on localhost whose
  coordinator listens on `port`, each process with `devices` CPU devices."""
  return {**device_env(devices), 'JAX_COORDINATOR_ADDRESS': f'127.0.0.1:{port}',
          'JAX_NUM_PROCESSES': str(num_processes), 'JAX_PROCESS_ID': str(process_id)}


def start_processes(runs: list[tuple[list[str], dict[str, str] | None]], log_dir: str,
                    cwd: str | None = None) -> list[tuple[subprocess.Popen, str]]:
  """Starts each (command, environment) at once, as the processes of one job: [(process, log)]; an
  environment of None is this process's.

  Output goes to files in `log_dir`, not pipes: a pipe that is not read while another process is
  awaited fills up and blocks its writer, which then never reaches the collective the others wait
  in.
  """
  started = []
  for i, (command, env) in enumerate(runs):
    log = os.path.join(log_dir, f'process_{i}.log')
    with open(log, 'w', encoding='utf-8') as f:
      started.append((subprocess.Popen(command, env=env, cwd=cwd, stdout=f,
                                       stderr=subprocess.STDOUT), log))
  return started


def wait_processes(started: list[tuple[subprocess.Popen, str]],
                   timeout: float = 300) -> list[str]:
  """Waits until every started process has exited, failing (with them all killed) after `timeout`
  seconds; returns what each printed. Their exit statuses are their `returncode`s."""
  processes = [process for process, _ in started]
  deadline = time.monotonic() + timeout
  while any(p.poll() is None for p in processes) and time.monotonic() < deadline:
    time.sleep(0.1)
  timed_out = [p.poll() is None for p in processes]
  kill_processes(started)
  outputs = []
  for _, log in started:
    with open(log, encoding='utf-8') as f:
      outputs.append(f.read())
  tails = '\n'.join(output[-3000:] for output in outputs)
  assert not any(timed_out), f'not finished in {timeout} s:\n{tails}'
  return outputs


def kill_processes(started: list[tuple[subprocess.Popen, str]]) -> None:
  """Kills every started process still running, and reaps them all."""
  for process, _ in started:
    if process.poll() is None:
      process.kill()
    process.wait()


def finish_processes(started: list[tuple[subprocess.Popen, str]],
                     timeout: float = 300) -> list[str]:
  """`wait_processes`, asserting that every process exited 0."""
  outputs = wait_processes(started, timeout)
  assert [p.returncode for p, _ in started] == [0] * len(started), '\n'.join(
      output[-3000:] for output in outputs)
  return outputs


def run_processes(runs: list[tuple[list[str], dict[str, str]]], log_dir: str, timeout: float = 300,
                  cwd: str | None = None) -> list[str]:
  """Runs each (command, environment) at once (`start_processes`); asserts that all exit 0 within
  `timeout` seconds and returns what each printed (`finish_processes`)."""
  return finish_processes(start_processes(runs, log_dir, cwd), timeout)
