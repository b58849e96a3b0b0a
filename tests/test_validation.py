"""Bad input gets one clear line and loses nothing: config ranges and their relation to the corpus (exit 2, nothing
written), misplaced override keys, a changed corpus under a resumed run, a busy workdir, and the evaluate and
generate commands' flags (one line, no traceback, no checkpoint byte changed)."""

import hashlib
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from lstm_jax import config as config_lib
from lstm_jax.data import corpora
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import loop as train
from lstm_jax.train import validation
from lstm_jax.train import workdir

REPO = pathlib.Path(__file__).resolve().parents[1]


def _config(tmp_path, text="abcd efgh ijkl mnop " * 60, **overrides):
  config = config_lib.default_config()
  corpus = tmp_path / "corpus.txt"
  corpus.write_text(text)
  config.data.corpus, config.data.edition = str(corpus), "raw"
  config.data.batch_size, config.data.num_steps = 4, 8
  config.model.hidden_size = 8
  config.optimizer.learning_rate, config.optimizer.clip_norm = 1.0, 1.0
  config.train.num_epochs, config.train.generate_every_epochs, config.train.quiet = 1, 0, True
  config.generate.prefixes = ("ab",)
  for path, value in overrides.items():
    section, field = path.split("__")
    config[section][field] = value
  return config


@pytest.mark.parametrize("field,value", [
    ("data__batch_size", 0), ("data__batch_size", -4), ("data__num_steps", 0), ("model__hidden_size", 0),
    ("train__num_epochs", 0), ("optimizer__learning_rate", 0.0), ("optimizer__learning_rate", float("nan")),
    ("generate__temperature", 0.0), ("model__dropout", 1.5), ("data__sampling", "shuffled"),
    ("model__recurrence", "scan"), ("train__keep_checkpoints", 0)])
def test_each_field_out_of_range_is_one_line_naming_it(tmp_path, field, value):
  config = _config(tmp_path, **{field: value})
  path = field.replace("__", ".")
  if path == "model.recurrence":  # a valid value: no error
    validation.check(config)
    return
  with pytest.raises(validation.ConfigError) as error:
    validation.check(config)
  assert str(error.value).count("\n") == 0 and f"--config.{path}=" in str(error.value)


@pytest.mark.parametrize("text,overrides,names", [  # the corpus: an empty or 2-character text, too short a stream
    ("", {}, "0 training tokens"),
    ("ab", {}, "data.num_steps=8"),
    (None, {"data__num_steps": 5000}, "no minibatch of 4 x 5000"),
    (None, {"generate__top_k": 99}, "generate.top_k=99"),
    (None, {"data__val_fraction": 0.0005}, "validation split"),
])
def test_relations_between_config_and_corpus_are_checked(tmp_path, text, overrides, names):
  config = _config(tmp_path, **overrides) if text is None else _config(tmp_path, text=text, **overrides)
  corpus = corpora.load(config.data)
  with pytest.raises(validation.ConfigError, match=names):
    validation.check(config, corpus)


@pytest.mark.slow
def test_a_two_symbol_corpus_with_a_small_top_k_trains_and_saves(tmp_path):
  config = _config(tmp_path, text="ab" * 300, generate__top_k=2, generate__method="sample",
                   train__generate_every_epochs=1)
  train.train_and_evaluate(config, str(tmp_path / "work"))
  assert workdir.is_finished(tmp_path / "work")
  assert checkpoint_lib.Checkpointer(tmp_path / "work", read_only=True).latest_step() is not None


def test_misplaced_keys_name_the_right_path():
  assert "did you mean optimizer.learning_rate?" in config_lib.suggest_field("train.learning_rate")
  assert "did you mean data.batch_size?" in config_lib.suggest_field("data.batchsize")


def _hashes(root):
  return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest()
          for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_a_changed_corpus_is_refused_on_resume_and_nothing_changes(tmp_path):
  config = _config(tmp_path)
  train.train_and_evaluate(config, str(tmp_path / "work"))
  before = _hashes(tmp_path / "work" / "checkpoints")
  config = _config(tmp_path, text="zyxw vuts rqpo " * 80)
  config.train.num_epochs = 2
  with pytest.raises(checkpoint_lib.CheckpointError, match=r"another corpus .*--config.train.resume=False"):
    train.train_and_evaluate(config, str(tmp_path / "work"))
  assert _hashes(tmp_path / "work" / "checkpoints") == before


def test_a_busy_workdir_is_refused_and_a_stale_lock_taken_over(tmp_path, capsys):
  (tmp_path / "work").mkdir()
  with workdir.lock(tmp_path / "work"):
    with pytest.raises(workdir.WorkdirBusy, match=f"in use by process {os.getpid()}"):
      with workdir.lock(tmp_path / "work"):
        pass
  assert not (tmp_path / "work" / ".lock").exists()  # released
  dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
  (tmp_path / "work" / ".lock").write_text(f'{{"host": "{os.uname().nodename}", "pid": {dead.stdout.strip()}}}')
  with workdir.lock(tmp_path / "work"):
    pass
  assert "Taking over the stale lock" in capsys.readouterr().out


def _run(module, *args):
  env = {**os.environ, "PYTHONPATH": str(REPO)}
  return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, cwd=REPO)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  root = tmp_path_factory.mktemp("trained")
  config = _config(root, text="Abcd Efgh ijkl mnop " * 60)
  config.data.edition = "d2l_2019"  # lowercases: capitals in prefixes and files must be lowercased too
  train.train_and_evaluate(config, str(root / "work"))
  return root / "work"


@pytest.mark.slow
@pytest.mark.parametrize("module,args,status,message", [
    ("lstm_jax.commands.evaluate", ["--step=abc"], 2, "--step=abc"),
    ("lstm_jax.commands.evaluate", ["--step=999"], 1, "step 999 not found"),
    ("lstm_jax.commands.evaluate", ["--split=val"], 2, "no validation text"),
    ("lstm_jax.commands.evaluate", [], 0, "train split (default: no validation split)"),
    ("lstm_jax.commands.generate", ["--num_tokens=-5"], 2, "--num_tokens=-5"),
    ("lstm_jax.commands.generate", ["--prefix="], 2, "--prefix is empty"),
    ("lstm_jax.commands.generate", ["--top_k=99", "--method=sample"], 2, "--top_k=99"),
    ("lstm_jax.commands.generate", ["--temperature=0", "--method=sample"], 2, "--temperature=0"),
    ("lstm_jax.commands.generate", ["--prefix=ABCD", "--num_tokens=3"], 0, "abcd"),
    ("lstm_jax.commands.generate", ["--prefix=xyz"], 2, "'x'"),
    ("lstm_jax.commands.evaluate", ["--text_file={root}/empty.txt"], 2, "empty.txt holds 0 tokens"),
    ("lstm_jax.commands.evaluate", ["--text_file={root}/capitals.txt"], 0, "capitals.txt: perplexity"),
    ("lstm_jax.commands.evaluate", ["--batch_size=0"], 2, "--batch_size"),
])
def test_commands_answer_bad_flags_in_one_line_and_write_nothing(trained, module, args, status, message):
  (trained.parent / "empty.txt").write_text("")
  (trained.parent / "capitals.txt").write_text("ABCD EFGH IJKL " * 10)  # lowercased by the run's d2l_2019
  before = _hashes(trained)
  result = _run(module, f"--workdir={trained}", *(a.format(root=trained.parent) for a in args))
  assert result.returncode == status, result.stderr
  assert message in (result.stderr if status else result.stdout)
  assert "Traceback" not in result.stderr and "WARNING" not in result.stderr
  assert _hashes(trained) == before


@pytest.mark.slow
def test_evaluate_without_a_run_or_on_a_corrupt_checkpoint_is_one_line_and_changes_nothing(trained, tmp_path):
  result = _run("lstm_jax.commands.evaluate", f"--workdir={tmp_path / 'none'}")
  assert result.returncode == 1 and "train first" in result.stderr and "Traceback" not in result.stderr
  corrupt = tmp_path / "corrupt"
  shutil.copytree(trained, corrupt)
  for path in (corrupt / "checkpoints").rglob("*"):
    if path.is_file() and "state" in path.parts and path.stat().st_size > 0:
      path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
  before = _hashes(corrupt)
  result = _run("lstm_jax.commands.generate", f"--workdir={corrupt}", "--prefix=ab")
  assert result.returncode == 1 and "cannot be read" in result.stderr and "Traceback" not in result.stderr
  assert _hashes(corrupt) == before


@pytest.mark.slow
def test_a_second_training_in_a_held_workdir_exits_naming_host_and_pid(tmp_path):
  config_file = tmp_path / "tiny.py"
  corpus = tmp_path / "corpus.txt"
  corpus.write_text("abcd efgh ijkl mnop " * 60)
  config_file.write_text(TINY_CONFIG.format(corpus=str(corpus)))
  (tmp_path / "work").mkdir()
  (tmp_path / "work" / ".lock").write_text(f'{{"host": "{os.uname().nodename}", "pid": {os.getpid()}}}')
  result = _run("lstm_jax.main", f"--config={config_file}", f"--workdir={tmp_path / 'work'}")
  assert result.returncode == 1 and f"in use by process {os.getpid()}" in result.stderr
  assert "Traceback" not in result.stderr and sorted(p.name for p in (tmp_path / "work").iterdir()) == [".lock"]


TINY_CONFIG = '''
from lstm_jax import config as config_lib
def get_config():
  c = config_lib.default_config()
  c.data.corpus = {corpus!r}; c.data.edition = "raw"; c.data.batch_size = 4; c.data.num_steps = 8
  c.model.hidden_size = 8; c.train.num_epochs = 1; c.train.generate_every_epochs = 0
  c.generate.prefixes = ("ab",)
  return c
'''


@pytest.mark.slow
def test_main_exits_2_on_a_bad_config_and_writes_nothing(tmp_path):
  for args, message in ((["--config.data.batch_size=0"], "--config.data.batch_size=0"),
                        (["--config.train.learning_rate=1"], "did you mean optimizer.learning_rate")):
    result = _run("lstm_jax.main", "--config=experiments/timemachine_lstm.py", f"--workdir={tmp_path / 'w'}", *args)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "w").exists()
