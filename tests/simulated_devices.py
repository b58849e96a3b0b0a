"""Running code on N simulated CPU devices: ``XLA_FLAGS`` must be set before JAX initialises, so the code runs in
its own subprocess; every test that needs several devices goes through ``run_script``."""

import json
import os
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]


def run_script(script: str, *args: str, devices: int = 1, timeout: int = 600, **env: str):
  """The JSON the last line of ``script`` prints, run with ``args`` in a subprocess that starts JAX with only its
  CPU backend, ``devices`` simulated CPU devices (``XLA_FLAGS`` must be set before JAX initialises) and the repo
  and tests/ on its path; ``env``: more environment variables."""
  path = os.pathsep.join([str(REPO), str(REPO / "tests")])
  environment = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": path, **env}
  if devices > 1:
    environment["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
  result = subprocess.run([sys.executable, "-c", script, *args], env=environment, capture_output=True, text=True,
                          cwd=REPO, timeout=timeout)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.strip().splitlines()[-1])
