"""Checkpoints: exact resume after SIGKILL, evaluation/generation from a checkpoint, and bad input that loses nothing."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import evaluate
from lstm_jax.train import generate
from lstm_jax.train import loop as train
from lstm_jax.train import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]

CONFIG_FILE = '''
from lstm_jax import config as config_lib
def get_config():
  c = config_lib.default_config()
  c.data.corpus = {corpus!r}; c.data.edition = "raw"; c.data.max_tokens = 1500; c.data.num_val_tokens = 200
  c.data.batch_size = 4; c.data.num_steps = 8; c.data.sampling = {sampling!r}
  c.model.hidden_size = 8; c.model.dropout = 0.0
  c.optimizer.learning_rate = 1.0; c.optimizer.clip_norm = 1.0
  c.train.num_epochs = 6; c.train.generate_every_epochs = 0; c.train.checkpoint_every_epochs = 2
  c.train.checkpoint_every_steps = 5; c.generate.prefixes = ("the",); c.generate.num_tokens = 5
  return c
'''


def _write_config(tmp_path, sampling):
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("the quick brown fox jumps over the lazy dog, said the time traveller. " * 40)
  path = tmp_path / f"config_{sampling}.py"
  path.write_text(CONFIG_FILE.format(corpus=str(corpus), sampling=sampling))
  return path


def _command(config_path, workdir, *overrides):
  return [sys.executable, "-m", "lstm_jax.main", f"--config={config_path}", f"--workdir={workdir}", *overrides]


def _env():
  return {**os.environ, "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}


def _final_params(workdir):
  _, params, _, _ = checkpoint_lib.load_params(workdir)
  return params


# Averaged SGD started after the first worse validation, with the regularizers' masks drawn every step.
AVERAGED = ("--config.optimizer.averaging=nt_asgd", "--config.optimizer.nonmono=1",
            "--config.train.eval_every_epochs=1", "--config.optimizer.learning_rate=4.0", "--config.model.embed_dim=4",
            "--config.model.weight_drop=0.3", "--config.model.locked_dropout=0.2")


@pytest.mark.parametrize("sampling, stop_signal, overrides", [
    ("sequential", signal.SIGKILL, ()), ("random", signal.SIGKILL, ()), ("sequential", signal.SIGTERM, ()),
    ("sequential", signal.SIGKILL, AVERAGED)])
@pytest.mark.slow
def test_killed_then_resumed_equals_an_uninterrupted_run_bit_for_bit(tmp_path, sampling, stop_signal, overrides):
  config_path = _write_config(tmp_path, sampling)
  reference = tmp_path / "reference"
  subprocess.run(_command(config_path, reference, *overrides), check=True, env=_env(), cwd=REPO,
                 capture_output=True)
  if overrides:
    assert any("averaging_from_step" in r for r in _read(reference / "metrics.jsonl")), "averaging never started"

  interrupted = tmp_path / "interrupted"
  process = subprocess.Popen(_command(config_path, interrupted, *overrides), env=_env(), cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
  kill_point = random.Random(f"{sampling}-{stop_signal}-{len(overrides)}")  # seeded: a failure replays there
  epochs_to_wait = kill_point.randint(1, 4)
  for _ in range(epochs_to_wait):
    process.stdout.readline()
  time.sleep(kill_point.uniform(0.0, 0.3))
  process.send_signal(stop_signal)
  rest_of_output = process.communicate()[0]
  if stop_signal == signal.SIGTERM:  # saves where it is and exits cleanly
    assert process.returncode == 0 and "Received SIGTERM: saved checkpoint step" in rest_of_output
  saved = checkpoint_lib.Checkpointer(interrupted, read_only=True)
  killed_at = saved.latest_step()
  saved.close()
  assert killed_at is not None, "the run was killed before its first checkpoint"

  resumed = subprocess.run(_command(config_path, interrupted, *overrides), check=True, env=_env(), cwd=REPO,
                           capture_output=True, text=True)
  assert f"Resumed from checkpoint step {killed_at}" in resumed.stdout or "nothing to do" in resumed.stdout
  expected, actual = _final_params(reference), _final_params(interrupted)
  for a, b in zip(jax.tree.leaves(expected), jax.tree.leaves(actual)):
    assert np.array_equal(np.asarray(a), np.asarray(b))
  reference_log = [r for r in _read(reference / "metrics.jsonl") if "epoch" in r and "final" not in r]
  resumed_log = [r for r in _read(interrupted / "metrics.jsonl") if "epoch" in r and "final" not in r]
  assert [r["train_loss"] for r in reference_log] == [r["train_loss"] for r in resumed_log]


def _read(path):
  return workdir_lib.read_metrics(pathlib.Path(path).parent)


def _tiny_config(tmp_path, **train_overrides):
  config = config_lib.default_config()
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("abcd efgh ijkl mnop " * 60)
  config.data.corpus, config.data.edition = str(corpus), "raw"
  config.data.max_tokens, config.data.num_val_tokens = 800, 100
  config.data.batch_size, config.data.num_steps = 4, 8
  config.model.hidden_size = 8
  config.optimizer.learning_rate, config.optimizer.clip_norm = 1.0, 1.0
  config.train.num_epochs, config.train.generate_every_epochs = 2, 0
  config.train.checkpoint_every_epochs = 1
  for key, value in train_overrides.items():
    config.train[key] = value
  return config


@pytest.mark.slow
def test_evaluate_and_generate_from_a_checkpoint_match_the_trained_model(tmp_path):
  config = _tiny_config(tmp_path)
  summary = train.train_and_evaluate(config, str(tmp_path / "work"))
  model, params, vocab, saved_config = checkpoint_lib.load_params(tmp_path / "work")
  assert saved_config.model.hidden_size == 8 and len(vocab) == model.vocab_size
  from lstm_jax.data import corpora
  corpus = corpora.load(config.data)
  result = evaluate.evaluate_ids(model, params, corpus.val_ids, config.data.batch_size, config.data.num_steps)
  np.testing.assert_allclose(result.perplexity, summary["val_perplexity"], rtol=1e-6)
  out = subprocess.run([sys.executable, "-m", "lstm_jax.commands.generate", f"--workdir={tmp_path / 'work'}",
                        "--prefix=abcd", "--num_tokens=12"], env=_env(), cwd=REPO, capture_output=True, text=True,
                       check=True)
  assert out.stdout.rstrip("\n") == generate.generate_text(model, params, vocab, "abcd", 12)
  out = subprocess.run([sys.executable, "-m", "lstm_jax.commands.evaluate", f"--workdir={tmp_path / 'work'}"],
                       env=_env(), cwd=REPO, capture_output=True, text=True, check=True)
  assert f"perplexity {result.perplexity:.4f}" in out.stdout


@pytest.mark.parametrize("learning_rate", [1e38, 1e9, 3e3])
def test_divergence_stops_names_the_step_and_keeps_only_checkpoints_that_evaluate(tmp_path, learning_rate):
  """1e38: step 1's update already overflows; 1e9: perplexity overflows without a NaN; 3e3: diverges later. In every
  case the run stops and whatever checkpoint it calls "last good" evaluates to a finite perplexity."""
  config = _tiny_config(tmp_path, num_epochs=6, checkpoint_every_steps=3)
  config.optimizer.learning_rate, config.optimizer.clip_norm = learning_rate, 0.0
  with pytest.raises(train.NonFiniteLossError, match=r"Training diverged: .* at step \d+.*; stopped, ") as error:
    train.train_and_evaluate(config, str(tmp_path / "work"))
  saved = checkpoint_lib.Checkpointer(tmp_path / "work", read_only=True)
  if saved.all_steps():
    assert f"the last good checkpoint is step {saved.latest_step()}" in str(error.value)
    model, params, vocab, saved_config = checkpoint_lib.load_params(tmp_path / "work")
    corpus = corpora.load(saved_config.data)
    result = evaluate.evaluate_ids(model, params, corpus.train_ids, 2, saved_config.data.num_steps)
    assert np.isfinite(result.perplexity)
  else:
    assert "no checkpoint was written yet" in str(error.value)


@pytest.mark.slow
def test_main_exits_non_zero_with_the_message_on_a_non_finite_loss(tmp_path):
  config_path = _write_config(tmp_path, "random")
  result = subprocess.run(_command(config_path, tmp_path / "work", "--config.optimizer.learning_rate=1e38",
                                   "--config.optimizer.clip_norm=0"), env=_env(), cwd=REPO, capture_output=True,
                          text=True)
  assert result.returncode != 0
  assert "Training diverged" in result.stderr and "Traceback" not in result.stderr


def test_incompatible_checkpoint_names_the_differing_keys(tmp_path):
  config = _tiny_config(tmp_path, num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / "work"))
  config.model.hidden_size = 16
  config.train.num_epochs = 2
  with pytest.raises(checkpoint_lib.CheckpointError, match=r"model.hidden_size: checkpoint 8, now 16"):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert checkpoint_lib.load_params(tmp_path / "work")[0].hidden_size == 8  # nothing was overwritten


def test_corrupt_checkpoint_is_a_clear_error_and_is_not_deleted(tmp_path):
  config = _tiny_config(tmp_path, num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / "work"))
  steps = checkpoint_lib.Checkpointer(tmp_path / "work", read_only=True).all_steps()
  step_dir = pathlib.Path(workdir_lib.checkpoint_dir(tmp_path / "work")) / str(steps[-1])
  for path in (step_dir / "state").rglob("*"):
    if path.is_file() and path.stat().st_size > 0:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # truncate every data file
  config.train.num_epochs = 2
  with pytest.raises(checkpoint_lib.CheckpointError, match="cannot be read"):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert step_dir.is_dir()


def test_resume_false_sets_old_checkpoints_aside(tmp_path):
  config = _tiny_config(tmp_path, num_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / "work"))
  config.train.resume = False
  train.train_and_evaluate(config, str(tmp_path / "work"))
  aside = list((tmp_path / "work").glob("previous-*/checkpoints"))
  assert len(aside) == 1 and any(aside[0].iterdir())


def test_unwritable_workdir_is_a_clear_error(tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  with pytest.raises(OSError, match="pass a writable --workdir"):
    train.train_and_evaluate(_tiny_config(tmp_path), str(blocker / "work"))


def test_load_params_without_checkpoints_says_what_to_do(tmp_path):
  with pytest.raises(checkpoint_lib.CheckpointError, match="train first"):
    checkpoint_lib.load_params(tmp_path)
