"""The job each worker of a TPU VM runs: a sweep's points one after another, detached from the SSH
session that started it. launch/tpu_vm.py starts, watches and stops it on every worker at once.

  python -m launch.tpu_job start --spec=JSON    # returns at once; the job runs on
  python -m launch.tpu_job status               # this worker's state and the tail of its log
  python -m launch.tpu_job stop                 # SIGTERM: the running point saves and stops

`start` refuses while a job runs. Otherwise it kills what still holds the TPU's device files (a run
killed with SIGKILL can leave a process that keeps /dev/accel* or /dev/vfio/* open, and the next
run then fails to open the chips), and starts `run` in a new session with its standard streams
away from the SSH connection, so a dropped connection changes nothing (as levanter's and
big_vision's TPU launchers do with nohup or tmux).

`run` keeps JOB_DIR/pid and JOB_DIR/state.json, runs each point's command in the copied checkout
with its output appended to this worker's log (the spec's `log`, `{worker}` replaced by this
worker's name; on a bucket in new objects, research/appendable.py) and to JOB_DIR/job.log. On
SIGTERM it passes the signal on to the running point, whose training writes its preemption
checkpoint (research/preemption.py), waits for it and starts no other point.

The spec is JSON: {"log": "gs://.../logs/{worker}.log", "slices": S,
"points": [{"name": N, "command": [...]}]}.
"""

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

from research import appendable

JOB_DIR = os.path.expanduser('~/.research-job')
TPU_DEVICES = ('/dev/accel', '/dev/vfio/')  # v2-v5p and v5e/v6e chips: file name prefixes
FLUSH_SECONDS = 30.0  # how often a silent point's log reaches the bucket
_METADATA = 'http://metadata.google.internal/computeMetadata/v1/instance/attributes/'


def _read_json(path: str) -> dict:
  try:
    with open(path, encoding='utf-8') as f:
      return json.load(f)
  except (OSError, ValueError):
    return {}


def _write_json(path: str, value: dict) -> None:
  with open(path + '.tmp', 'w', encoding='utf-8') as f:
    json.dump(value, f)
  os.replace(path + '.tmp', path)


def _alive(pid: int) -> bool:
  """Whether process `pid` runs (a zombie, exited but not yet reaped by its parent, does not)."""
  try:
    with open(f'/proc/{pid}/stat', encoding='utf-8') as f:
      return f.read().rsplit(')', 1)[1].split()[0] != 'Z'
  except (OSError, IndexError):
    return False


def running_pid(job_dir: str) -> int | None:
  """The pid of this worker's running job, None if none runs."""
  try:
    with open(os.path.join(job_dir, 'pid'), encoding='utf-8') as f:
      pid = int(f.read().strip())
  except (OSError, ValueError):
    return None
  return pid if _alive(pid) else None


def device_holders(prefixes=TPU_DEVICES) -> list[int]:
  """Pids of the processes (other than this one) with a file open whose path starts with one of
  `prefixes`, found through /proc/PID/fd as `fuser` does, without needing root for our own."""
  holders = []
  for entry in os.listdir('/proc'):
    if not entry.isdigit() or int(entry) == os.getpid():
      continue
    fd_dir = f'/proc/{entry}/fd'
    try:
      targets = [os.readlink(os.path.join(fd_dir, fd)) for fd in os.listdir(fd_dir)]
    except OSError:  # gone, or not ours
      continue
    if any(target.startswith(prefixes) for target in targets):
      holders.append(int(entry))
  return holders


def worker_name(multislice: bool = False) -> str:
  """This worker's log name: `worker-N` from the TPU VM's metadata (agent-worker-number); on a
  multislice job `slice-S-worker-N` (MEGASCALE_SLICE_ID), or `HOSTNAME-worker-N` where the slice
  is not in the environment, so that no two workers share a log; `worker-0` off a TPU VM."""
  number = os.environ.get('TPU_WORKER_ID')
  if number is None:
    request = urllib.request.Request(_METADATA + 'agent-worker-number',
                                     headers={'Metadata-Flavor': 'Google'})
    try:
      with urllib.request.urlopen(request, timeout=5) as response:
        number = response.read().decode().strip()
    except OSError:
      number = '0'
  slice_id = os.environ.get('MEGASCALE_SLICE_ID')
  if slice_id:
    return f'slice-{slice_id}-worker-{number}'
  return f'{socket.gethostname()}-worker-{number}' if multislice else f'worker-{number}'


def start(spec: str, job_dir: str, device_prefixes=TPU_DEVICES) -> str:
  """Starts `run` detached (see the module docstring); returns the line to print."""
  json.loads(spec)  # a bad spec fails here, in the SSH session, not in the detached job
  pid = running_pid(job_dir)
  if pid is not None:
    return (f'A job is already running here (pid {pid}); `python -m launch.tpu_vm stop` stops '
            'it, then start again.')
  os.makedirs(job_dir, exist_ok=True)
  stale = device_holders(device_prefixes)
  for holder in stale:
    try:
      os.kill(holder, signal.SIGKILL)
    except OSError:
      pass
  with open(os.path.join(job_dir, 'runner.out'), 'ab') as out:
    process = subprocess.Popen(
        [sys.executable, '-m', 'launch.tpu_job', 'run', f'--spec={spec}', f'--job_dir={job_dir}'],
        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
  _write_json(os.path.join(job_dir, 'state.json'), {'state': 'starting', 'pid': process.pid})
  with open(os.path.join(job_dir, 'pid'), 'w', encoding='utf-8') as f:
    f.write(str(process.pid))
  killed = f'; killed {len(stale)} stale process(es) holding the TPU: {stale}' if stale else ''
  return f'Started job {process.pid}{killed}.'


def run(spec: dict, job_dir: str, flush_seconds: float = FLUSH_SECONDS) -> int:
  """Runs the spec's points in order (see the module docstring); returns 0, or 1 if a point
  failed, or 143 when stopped by SIGTERM."""
  state_path = os.path.join(job_dir, 'state.json')
  worker = worker_name(spec.get('slices', 1) > 1)
  log_path = spec['log'].format(worker=worker)
  if '://' not in log_path:
    os.makedirs(os.path.dirname(os.path.abspath(log_path)), exist_ok=True)
  log = appendable.Appender(log_path, flush_seconds)
  local = appendable.Appender(os.path.join(job_dir, 'job.log'))
  lock, stop = threading.Lock(), threading.Event()
  current: list[subprocess.Popen] = []

  def on_signal(signum, frame):
    del frame
    stop.set()
    if current and current[0].poll() is None:
      current[0].send_signal(signum)
  signal.signal(signal.SIGTERM, on_signal)
  signal.signal(signal.SIGINT, on_signal)

  def write(text: str) -> None:
    with lock:
      log.write(text)
      local.write(text)

  def pump(stream) -> None:
    for line in iter(stream.readline, b''):
      write(line.decode('utf-8', errors='replace'))

  exit_codes, points = {}, spec['points']
  for index, point in enumerate(points):
    if stop.is_set():
      break
    _write_json(state_path, {'state': 'running', 'pid': os.getpid(), 'worker': worker,
                             'point': point['name'],
                             'index': index + 1, 'points': len(points), 'exit_codes': exit_codes})
    write(f'=== point {index + 1}/{len(points)} {point["name"]}: {shlex.join(point["command"])}\n')
    process = subprocess.Popen(point['command'], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
    current[:] = [process]
    if stop.is_set():  # SIGTERM came between the check above and the start
      process.terminate()
    reader = threading.Thread(target=pump, args=(process.stdout,), daemon=True)
    reader.start()
    while True:
      try:
        code = process.wait(timeout=flush_seconds)
        break
      except subprocess.TimeoutExpired:
        with lock:
          log.flush()
    reader.join()
    exit_codes[point['name']] = code
    write(f'=== point {point["name"]} exited {code}\n')
  final = 'stopped' if stop.is_set() else 'finished'
  write(f'=== job {final}\n')
  with lock:
    log.close()
    local.close()
  _write_json(state_path, {'state': final, 'pid': os.getpid(), 'worker': worker,
                           'points': len(points), 'exit_codes': exit_codes})
  if stop.is_set():
    return 143
  return 1 if any(exit_codes.values()) else 0


def status(job_dir: str, lines: int = 5) -> str:
  """`<worker name>: <its job's state>` in one line, then the last `lines` lines of its log."""
  state = _read_json(os.path.join(job_dir, 'state.json'))
  pid = running_pid(job_dir)
  if not state:
    line = 'no job has run here'
  elif state['state'] in ('starting', 'running') and pid is None:
    line = (f'died while {state["state"]} {state.get("point", "")} (the VM restarted or the job '
            'was killed); start it again to resume')
  elif state['state'] == 'running':
    line = f'running point {state["index"]}/{state["points"]} {state["point"]} (pid {pid})'
  elif state['state'] == 'starting':
    line = f'starting (pid {pid})'
  else:
    failed = [name for name, code in state['exit_codes'].items() if code]
    line = (f'{state["state"]}: {len(state["exit_codes"])} of {state["points"]} points ran'
            + (f', failed: {", ".join(failed)}' if failed else ''))
  try:
    with open(os.path.join(job_dir, 'job.log'), encoding='utf-8', errors='replace') as f:
      tail = f.readlines()[-lines:] if lines else []
  except OSError:
    tail = []
  name = state.get('worker') or worker_name()  # the name its log has
  return '\n'.join([f'{name}: {line}', *('  ' + text.rstrip('\n') for text in tail)])


def stop(job_dir: str) -> str:
  """Sends SIGTERM to this worker's job; returns the line to print."""
  pid = running_pid(job_dir)
  if pid is None:
    return 'No job is running here.'
  os.kill(pid, signal.SIGTERM)
  return f'Sent SIGTERM to job {pid}: the running point saves a checkpoint and stops.'


def main(argv: list[str]) -> int:
  parser = argparse.ArgumentParser(prog='python -m launch.tpu_job', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('action', choices=['start', 'run', 'status', 'stop'])
  parser.add_argument('--spec', default='', help='start, run: the job as JSON (module docstring).')
  parser.add_argument('--job_dir', default=JOB_DIR, help='Where the job keeps its pid and state.')
  parser.add_argument('--lines', type=int, default=5, help='status: how many log lines to show.')
  args = parser.parse_args(argv)
  if args.action in ('start', 'run') and not args.spec:
    parser.error(f'{args.action} needs --spec=JSON')
  if args.action == 'run':
    return run(json.loads(args.spec), args.job_dir)
  print({'start': lambda: start(args.spec, args.job_dir),
         'status': lambda: status(args.job_dir, args.lines),
         'stop': lambda: stop(args.job_dir)}[args.action]())
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
