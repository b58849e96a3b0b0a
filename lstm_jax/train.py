"""Training: a pure, jitted train step and the loop around it (data, logging, evaluation, generation, saving).

The recurrent state (``TrainState.carry``) follows the book: with ``sequential`` sampling it is zeroed at the
start of every epoch and carried from one minibatch into the next with ``stop_gradient`` (truncated BPTT);
with ``random`` or ``windows`` sampling, or ``data.carry_state=False``, every minibatch starts from zeros.
"""

from __future__ import annotations

import functools
import json
import pathlib
import signal
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging

from lstm_jax import checkpoint as checkpoint_lib
from lstm_jax import evaluate as evaluate_lib
from lstm_jax import generate as generate_lib
from lstm_jax import loss as loss_lib
from lstm_jax import metrics as metrics_lib
from lstm_jax import model as model_lib
from lstm_jax import sharding as sharding_lib
from lstm_jax.data import batching
from lstm_jax.data import corpora


class TrainState(NamedTuple):
  params: Any
  opt_state: Any
  step: jax.Array   # int32 scalar: minibatches trained so far
  rng: jax.Array    # base key; step t uses fold_in(rng, t)
  carry: Any        # recurrent state carried between minibatches (sequential sampling)


class NonFiniteLossError(FloatingPointError):
  """The training loss became NaN or Inf."""


OPTIMIZERS = ("sgd", "momentum", "adam", "adamw", "rmsprop", "adagrad")


def make_optimizer(opt_config: ml_collections.ConfigDict) -> optax.GradientTransformation:
  """Global-norm clipping (when ``clip_norm > 0``) followed by the named optax optimizer."""
  lr = opt_config.learning_rate
  name = opt_config.name
  if name == "sgd":
    base = optax.sgd(lr)
  elif name == "momentum":
    base = optax.sgd(lr, momentum=0.9)
  elif name == "adamw":
    base = optax.adamw(lr, weight_decay=opt_config.weight_decay)
  elif name in ("adam", "rmsprop", "adagrad"):
    base = getattr(optax, name)(lr)
  else:
    raise ValueError(f"Unknown optimizer {name!r}; choose one of {OPTIMIZERS} (--config.optimizer.name=NAME).")
  if opt_config.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(opt_config.clip_norm), base)
  return base


def create_train_state(model: model_lib.LanguageModel, optimizer: optax.GradientTransformation, seed: int,
                       batch_size: int) -> TrainState:
  init_key, train_key = jax.random.split(jax.random.key(seed))
  params = model.init(init_key)
  return TrainState(params=params, opt_state=optimizer.init(params), step=jnp.zeros((), jnp.int32),
                    rng=train_key, carry=model.zero_carry(batch_size))


def train_step(state: TrainState, inputs_BT: jax.Array, targets_BT: jax.Array, *, model: model_lib.LanguageModel,
               optimizer: optax.GradientTransformation, carry_state: bool) -> tuple[TrainState, dict[str, jax.Array]]:
  """One SGD step on the token-mean cross-entropy; returns the new state and summed metrics of the batch."""
  carry = jax.lax.stop_gradient(state.carry) if carry_state else model.zero_carry(inputs_BT.shape[0])
  dropout_rng = jax.random.fold_in(state.rng, state.step) if model.dropout > 0 else None

  def loss_fn(params):
    logits, new_carry = model.apply(params, inputs_BT, carry, dropout_rng=dropout_rng)
    return jnp.mean(loss_lib.token_nll(logits, targets_BT)), new_carry

  (loss, new_carry), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  num_tokens = targets_BT.size
  metrics = {"nll_sum": loss * num_tokens, "tokens": jnp.asarray(num_tokens, jnp.float32),
             "grad_norm": optax.global_norm(grads)}
  return state._replace(params=params, opt_state=opt_state, step=state.step + 1,
                        carry=new_carry if carry_state else state.carry), metrics


def carries_state(data_config: ml_collections.ConfigDict) -> bool:
  """Whether minibatch ``t + 1`` starts from minibatch ``t``'s final state (else from zeros).

  ``data.carry_state`` None follows the sampling (carried for ``sequential`` only); False zeroes the state before
  every minibatch of any sampling; True is allowed only with ``sequential``, whose rows continue one another.
  """
  sequential = data_config.sampling == "sequential"
  if data_config.get("carry_state") is None:
    return sequential
  if data_config.carry_state and not sequential:
    raise ValueError(f"data.carry_state=True needs sequential sampling (rows that continue one another), not "
                     f"{data_config.sampling!r}; set --config.data.sampling=sequential or drop carry_state.")
  return bool(data_config.carry_state)


def compile_train_step(model, optimizer, carry_state):
  return jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, carry_state=carry_state),
                 donate_argnums=0)


def validation_batches(config, corpus: corpora.Corpus) -> list[batching.Batch]:
  """The fixed validation minibatches (``[batch, time]`` inputs and targets); empty when the config holds none out."""
  d = config.data
  if d.sampling == "windows":
    return batching.window_batches(corpus.train_ids, d.batch_size, d.num_steps, d.num_train_windows,
                                   d.num_val_windows, rng=None)
  if len(corpus.val_ids) > 1:
    return batching.evaluation_batches(corpus.val_ids, d.batch_size, d.num_steps)
  return []


def epoch_batches(config, corpus, epoch: int) -> list[batching.Batch]:
  """Epoch ``epoch``'s training minibatches (1-based), a pure function of the config's seed and data rules."""
  d = config.data
  return batching.epoch_batches(corpus.train_ids, sampling=d.sampling, edition=d.edition, batch_size=d.batch_size,
                                num_steps=d.num_steps, seed=config.seed, epoch=epoch, num_windows=d.num_train_windows)


def is_due(epoch: int, every: int, num_epochs: int) -> bool:
  """Whether an every-N-epochs action (log, evaluate, save) runs after ``epoch``; always after the last."""
  return epoch == num_epochs or (every > 0 and epoch % every == 0)


class _StopRequest:
  """Turns SIGTERM / SIGINT into a flag the loop checks after every step (save, then exit cleanly)."""

  def __init__(self):
    self.signal = None
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def prepare_workdir(workdir: str) -> pathlib.Path:
  """Creates ``workdir`` and checks it is writable, failing early with a message that names it."""
  path = pathlib.Path(workdir)
  try:
    path.mkdir(parents=True, exist_ok=True)
    probe = path / ".write_test"
    probe.write_text("")
    probe.unlink()
  except OSError as e:
    raise OSError(f"Workdir {workdir} cannot be created or written ({e.strerror or e}); pass a writable "
                  f"--workdir.") from e
  return path


def _set_aside_old_checkpoints(workdir: pathlib.Path) -> None:
  """``resume=False``: moves earlier checkpoints and metrics aside (never deletes them)."""
  old = checkpoint_lib.directory(workdir)
  if old.exists() and any(old.iterdir()):
    aside = workdir / f"previous-{time.strftime('%Y%m%d-%H%M%S')}"
    aside.mkdir()
    old.rename(aside / old.name)
    if (workdir / "metrics.jsonl").exists():
      (workdir / "metrics.jsonl").rename(aside / "metrics.jsonl")
    print(f"Starting fresh: earlier checkpoints moved to {aside}", flush=True)


def _truncate_metrics(path: pathlib.Path, last_step: int) -> None:
  """On resume, drops records logged after the checkpoint, so the log reads as if the run never stopped."""
  if path.exists():
    kept = [r for r in metrics_lib.read_metrics(path) if r["step"] <= last_step and "final" not in r]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))


def saved_state(state: TrainState, epoch: int, batch: int, nll_sum, tokens: int) -> dict[str, Any]:
  """What a checkpoint holds: the train state (RNG as raw key data), the data position and the epoch's sums."""
  return {"train": state._replace(rng=jax.random.key_data(state.rng)),
          "position": {"epoch": np.int64(epoch), "batch": np.int64(batch)},
          "epoch_sums": {"nll": nll_sum, "tokens": np.int64(tokens)}}


def saved_state_structure(state: TrainState) -> Any:
  """The abstract (shape/dtype) structure of ``saved_state`` for a state (concrete or from ``jax.eval_shape``)."""
  rng_data = jax.eval_shape(jax.random.key_data, state.rng)
  structure = {"train": state._replace(rng=rng_data),
               "position": {"epoch": np.int64(0), "batch": np.int64(0)},
               "epoch_sums": {"nll": jnp.zeros((), jnp.float32), "tokens": np.int64(0)}}
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype), structure)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
  """Trains the model a config describes, logging to stdout and ``workdir``; returns the final metrics.

  A workdir that holds checkpoints is resumed from the latest one (``config.train.resume``), exactly: same
  parameters, optimizer state, RNG, data position, carried state and epoch sums as if the run had never stopped.
  """
  workdir_path = prepare_workdir(workdir)
  corpus = corpora.load(config.data)
  vocab = corpus.vocab
  model = model_lib.from_config(config.model, len(vocab))
  optimizer = make_optimizer(config.optimizer)
  carry_state = carries_state(config.data)
  logging.info("Corpus %s (%s): %d training tokens, %d validation tokens, vocabulary %d.", config.data.corpus,
               config.data.edition, len(corpus.train_ids), len(corpus.val_ids), len(vocab))

  if not config.train.resume:
    _set_aside_old_checkpoints(workdir_path)
  checkpointer = checkpoint_lib.Checkpointer(workdir_path, keep=config.train.keep_checkpoints)
  state = create_train_state(model, optimizer, config.seed, config.data.batch_size)
  start_epoch, start_batch, nll_sum, tokens = 1, 0, jnp.zeros(()), 0
  latest = checkpointer.latest_step()
  if latest is not None:
    checkpoint_lib.check_compatible(checkpointer.read_meta(latest)["config"], config, str(checkpointer.manager.directory))
    saved = checkpointer.restore_state(latest, saved_state_structure(state))
    state = TrainState(*saved["train"])._replace(rng=jax.random.wrap_key_data(saved["train"][3]))
    state = jax.tree.map(jnp.asarray, state)
    start_epoch, start_batch = int(saved["position"]["epoch"]), int(saved["position"]["batch"])
    nll_sum, tokens = jnp.asarray(saved["epoch_sums"]["nll"]), int(saved["epoch_sums"]["tokens"])
    _truncate_metrics(workdir_path / "metrics.jsonl", latest)
    print(f"Resumed from checkpoint step {latest} (epoch {start_epoch}, batch {start_batch}).", flush=True)
  devices = sharding_lib.data_parallel_mesh(config.data.batch_size)  # one device: placement is a no-op
  state = sharding_lib.place_train_state(state, devices)
  if jax.process_index() == 0:
    resolved = {"config": config.to_dict(), "vocab_size": len(vocab)}
    (workdir_path / "config.json").write_text(json.dumps(resolved, indent=2, ensure_ascii=False, default=str))

  step_fn = compile_train_step(model, optimizer, carry_state)
  writer = metrics_lib.MetricWriter(workdir)
  val_batches = validation_batches(config, corpus)
  num_epochs = config.train.num_epochs
  every_steps = config.train.checkpoint_every_steps
  last_good = {"step": latest}
  summary: dict[str, Any] = {}

  def save(epoch, batch, perplexity=None):
    checkpointer.save(int(state.step), saved_state(state, epoch, batch, nll_sum, tokens), config, vocab, perplexity)
    last_good["step"] = int(state.step)

  def fail_non_finite(step_losses, first_step):
    losses = np.asarray(jnp.stack(step_losses))
    bad = first_step + int(np.argmax(~np.isfinite(losses)))
    checkpointer.wait()
    kept = (f"the last good checkpoint is step {last_good['step']} in {checkpointer.manager.directory} (kept)"
            if last_good["step"] is not None else "no checkpoint was written yet")
    raise NonFiniteLossError(f"Training loss became {losses[bad - first_step]} at step {bad}; stopped, {kept}. "
                             f"Lower --config.optimizer.learning_rate or set --config.optimizer.clip_norm.")

  if start_epoch > num_epochs:
    checkpointer.close()
    finished = [r for r in metrics_lib.read_metrics(workdir_path / "metrics.jsonl") if "epoch" in r]
    print(f"Already trained for {num_epochs} epochs in {workdir}; nothing to do.", flush=True)
    summary = {**finished[-1], "wall_time_sec": 0.0}
    writer.write(int(state.step), {"final": 1, **summary})
    writer.close()
    return summary
  tokens_since_log, time_of_log = 0, time.perf_counter()
  start = time.perf_counter()
  with _StopRequest() as stop:
    for epoch in range(start_epoch, num_epochs + 1):
      batches = epoch_batches(config, corpus, epoch)
      first_batch = start_batch if epoch == start_epoch else 0
      if first_batch == 0:
        nll_sum, tokens = jnp.zeros(()), 0
        if carry_state:
          state = state._replace(carry=sharding_lib.split_leading(model.zero_carry(config.data.batch_size), devices))
      step_losses, step_tokens, first_step = [], [], int(state.step) + 1
      for index in range(first_batch, len(batches)):
        inputs, targets = sharding_lib.split_leading(batches[index], devices)
        state, step_metrics = step_fn(state, inputs, targets)
        step_losses.append(step_metrics["nll_sum"])
        step_tokens.append(targets.size)
        nll_sum = nll_sum + step_metrics["nll_sum"]
        tokens += targets.size
        tokens_since_log += targets.size
        save_now = every_steps > 0 and int(state.step) % every_steps == 0 and index + 1 < len(batches)
        if save_now or stop.signal:
          if not np.isfinite(float(nll_sum)):
            fail_non_finite(step_losses, first_step)
          save(epoch, index + 1)
        if stop.signal:
          checkpointer.close()
          writer.close()
          print(f"Received {stop.signal}: saved checkpoint step {int(state.step)} in "
                f"{checkpointer.manager.directory}; rerun the same command to resume.", flush=True)
          raise SystemExit(0)
      train_nll = float(nll_sum) / tokens
      if not np.isfinite(train_nll):
        fail_non_finite(step_losses, first_step)
      step = int(state.step)
      record = {"epoch": epoch, "train_loss": train_nll, "train_perplexity": loss_lib.perplexity(train_nll)}
      last_half = len(batches) // 2  # d2l 1.x's board: per-batch perplexities averaged over the last half epoch
      if config.train.log_batch_perplexity and len(step_losses) >= last_half > 0:
        record["train_batch_perplexity_last_half"] = evaluate_lib.batch_perplexity_mean(
            step_losses[-last_half:], step_tokens[-last_half:])
      if val_batches and is_due(epoch, config.train.eval_every_epochs, num_epochs):
        evaluation = evaluate_lib.evaluate_batches(model, state.params, val_batches, carry_state=carry_state)
        record.update(evaluation.as_dict("val_"))
      if is_due(epoch, config.train.log_every_epochs, num_epochs):
        now = time.perf_counter()
        record["tokens_per_sec"] = tokens_since_log / (now - time_of_log)
        tokens_since_log, time_of_log = 0, now
        line = (f"epoch {epoch:4d}  step {step:6d}  loss {train_nll:.4f}  perplexity {record['train_perplexity']:.4f}"
                f"  tokens/s {record['tokens_per_sec']:,.0f}")
        if "val_perplexity" in record:
          line += f"  val loss {record['val_nll']:.4f}  val perplexity {record['val_perplexity']:.4f}"
        print(line, flush=True)
      record["elapsed_sec"] = time.perf_counter() - start
      writer.write(step, record)
      if is_due(epoch, config.train.generate_every_epochs, num_epochs):
        for prefix in config.generate.prefixes:
          text = generate_lib.generate_text(model, state.params, vocab, prefix, config.generate.num_tokens,
                                            method=config.generate.method, temperature=config.generate.temperature,
                                            top_k=config.generate.top_k, seed=config.seed)
          print(f" - {text}", flush=True)
      if is_due(epoch, config.train.checkpoint_every_epochs, num_epochs):
        nll_sum, tokens = jnp.zeros(()), 0
        save(epoch + 1, 0, record.get("val_perplexity", record["train_perplexity"]))
      summary = record
  summary["wall_time_sec"] = time.perf_counter() - start
  checkpointer.close()
  writer.write(int(state.step), {"final": 1, **summary})
  writer.close()
  return summary
