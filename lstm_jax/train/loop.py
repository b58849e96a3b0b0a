"""Training: a pure, jitted train step and the loop around it, in named phases.

``train_and_evaluate`` runs: ``start_run`` (corpus, model, optimizer, compiled step; nothing written yet),
``restore_or_init`` (the latest checkpoint, or fresh parameters), then per epoch ``train_epoch`` (the minibatches,
with mid-epoch saves and stop requests) and ``end_of_epoch`` (the epoch's record: perplexity, validation,
tokens/s, the progress line). ``lstm_jax.sweeps.population`` reuses ``epoch_record`` and the step.

The recurrent state (``TrainState.carry``) follows the book: with ``sequential`` sampling it is zeroed at the
start of every epoch and carried from one minibatch into the next with ``stop_gradient`` (truncated BPTT);
with ``random`` or ``windows`` sampling, or ``data.carry_state=False``, every minibatch starts from zeros.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import signal
from typing import Any, Sequence

import jax
import jax.numpy as jnp
from jax.experimental import multihost_utils
import ml_collections
import numpy as np
import optax
from absl import logging

from lstm_jax.data import corpora
from lstm_jax.data import pipeline
from lstm_jax.models import factory as models
from lstm_jax.models import scratch as model_lib
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import evaluate as evaluate_lib
from lstm_jax.train import generate as generate_lib
from lstm_jax.train import loss as loss_lib
from lstm_jax.train import metrics as metrics_lib
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import plots
from lstm_jax.train import progress as progress_lib
from lstm_jax.train import sharding as sharding_lib
from lstm_jax.train import validation
from lstm_jax.train import workdir as workdir_lib
from lstm_jax.train.state import (SavedState, TrainState, abstract_saved_state, create_train_state,
                                  evaluation_params, start_average, update_average)


class NonFiniteLossError(FloatingPointError):
  """The training diverged: its loss became NaN, Inf or too large for exp (or ``train.max_loss``)."""


MAX_LOSS = float(np.log(np.finfo(np.float32).max))  # ~88.7 nats: exp of more overflows float32


def train_step(state: TrainState, inputs_BT: jax.Array, targets_BT: jax.Array, *, model: model_lib.LanguageModel,
               optimizer: optax.GradientTransformation, carry_state: bool) -> tuple[TrainState, dict[str, jax.Array]]:
  """One update on the token-mean cross-entropy of ``[batch, time]`` tokens; returns the new state and the batch's
  summed NLL (nats), token count and gradient norm."""
  carry = jax.lax.stop_gradient(state.carry) if carry_state else model.zero_carry(inputs_BT.shape[0])
  dropout_rng = jax.random.fold_in(state.rng, state.step)  # fresh masks per minibatch (none when rates are 0)
  penalized = isinstance(model, model_lib.LanguageModel) and (model.ar > 0 or model.tar > 0)

  def loss_fn(params):
    if penalized:  # AR / TAR: the scratch model's forward returns the penalty beside the logits
      logits, new_carry, penalty = model.forward(params, inputs_BT, carry, dropout_rng=dropout_rng)
    else:
      (logits, new_carry), penalty = model.apply(params, inputs_BT, carry, dropout_rng=dropout_rng), 0.0
    nll = jnp.mean(loss_lib.token_nll(logits, targets_BT))
    return nll + penalty, (nll, new_carry)

  (_, (loss, new_carry)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  num_tokens = targets_BT.size
  metrics = {"nll_sum": loss * num_tokens, "tokens": jnp.asarray(num_tokens, jnp.float32),
             "grad_norm": optax.tree.norm(grads)}
  return state._replace(params=params, opt_state=opt_state, step=state.step + 1,
                        carry=new_carry if carry_state else state.carry,
                        average=update_average(state.average, params)), metrics


def compile_train_step(model, optimizer, carry_state, mesh: jax.sharding.Mesh | None = None):
  """``train_step`` jitted (the state donated); with the data-parallel ``mesh`` of several devices it is traced
  under that mesh (``jax.set_mesh``), where the Pallas kernels run one per device on its rows."""
  step = jax.jit(functools.partial(train_step, model=model, optimizer=optimizer, carry_state=carry_state),
                 donate_argnums=0)
  if mesh is None or mesh.size == 1:
    return step

  def step_on_mesh(*args):
    with jax.set_mesh(mesh):
      return step(*args)

  return step_on_mesh


def is_due(epoch: int, every: int, num_epochs: int) -> bool:
  """Whether an every-N-epochs action (log, evaluate, save) runs after ``epoch``; always after the last."""
  return epoch == num_epochs or (every > 0 and epoch % every == 0)


class StopRequest:
  """Turns SIGTERM / SIGINT into a flag the run checks between its phases and after every step: before training
  starts it exits at once (status 128 + the signal's number), once training runs it saves and exits cleanly.
  ``pending``: signals an earlier handler recorded (``lstm_jax.main`` catches them from its first line)."""

  def __init__(self, pending: list[str] | None = None):
    self.signal = None
    self._pending = pending if pending is not None else []
    self._previous = {}

  def __enter__(self):
    for sig in (signal.SIGTERM, signal.SIGINT):
      self._previous[sig] = signal.signal(sig, self._handle)
    if self._pending:  # read after the handlers are in place, so no signal falls between the two
      self.signal = self._pending[0]
    return self

  def _handle(self, signum, frame):
    del frame
    self.signal = signal.Signals(signum).name

  def exit_if_requested(self, what: str) -> None:
    """Exits (status 128 + signal number) when a stop was requested before training started."""
    if self.signal:
      print(f"Received {self.signal} {what}; nothing was saved. Rerun the same command to start.", flush=True)
      raise SystemExit(128 + signal.Signals[self.signal].value)

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)
    return False


def epoch_record(epoch: int, nll_sum: float, tokens: int, step_losses: Sequence[Any], step_tokens: Sequence[int],
                 num_batches: int, config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The training part of an epoch's record: mean NLL (nats per token), its perplexity and, with
  ``train.log_batch_perplexity``, d2l 1.x's measure (per-batch perplexities averaged over the last half epoch)."""
  train_nll = float(nll_sum) / tokens
  record = {"epoch": epoch, "train_loss": train_nll, "train_perplexity": loss_lib.perplexity(train_nll)}
  last_half = num_batches // 2
  if config.train.log_batch_perplexity and len(step_losses) >= last_half > 0:
    record["train_batch_perplexity_last_half"] = evaluate_lib.batch_perplexity_mean(
        step_losses[-last_half:], step_tokens[-last_half:])
  return record


def bits_per_character(record: dict[str, Any]) -> dict[str, float]:
  """``train_bpc`` (and ``val_bpc`` when the record has validation): a character model's NLL in bits."""
  bits = {"train_bpc": loss_lib.bits_per_token(record["train_loss"])}
  if "val_nll" in record:
    bits["val_bpc"] = loss_lib.bits_per_token(record["val_nll"])
  return bits


def progress_line(record: dict[str, Any], step: int, num_epochs: int) -> str:
  bpc = f"  bpc {record['train_bpc']:.4f}" if "train_bpc" in record else ""
  line = (f"epoch {record['epoch']:4d}/{num_epochs}  step {step:6d}  loss {record['train_loss']:.4f}  perplexity "
          f"{record['train_perplexity']:.4f}{bpc}  tokens/s {record['tokens_per_sec']:,.0f}")
  if "val_perplexity" in record:
    line += f"  val loss {record['val_nll']:.4f}  val perplexity {record['val_perplexity']:.4f}"
    line += f"  val bpc {record['val_bpc']:.4f}" if "val_bpc" in record else ""
  return line


@dataclasses.dataclass
class Run:
  """What stays fixed while a run trains: its config, data, model, optimizer, compiled step and outputs."""
  config: ml_collections.ConfigDict
  workdir: Any
  corpus: corpora.Corpus
  model: model_lib.LanguageModel
  optimizer: optax.GradientTransformation
  carry_state: bool
  devices: Any
  step_fn: Any
  val_batches: list
  checkpointer: checkpoint_lib.Checkpointer | None = None
  writer: metrics_lib.MetricWriter | None = None
  last_good_step: int | None = None
  corpus_fingerprint: str = ""                       # corpora.fingerprint: checked on resume
  _probe: Any = None                                 # jitted probe_loss
  progress: progress_lib.Progress | None = None      # epochs done of num_epochs, elapsed, ETA
  ticker: progress_lib.BatchTicker | None = None     # lines inside long epochs
  throughput: progress_lib.Throughput = dataclasses.field(default_factory=progress_lib.Throughput)
  plotted_at: float | None = None                    # progress clock of the last perplexity.png
  records: list = dataclasses.field(default_factory=list)  # the log so far (metrics.jsonl), saved with checkpoints
  final: dict[str, Any] | None = None                # a finished run's final record, as its log holds it

  def plot_due(self, last: bool) -> bool:
    """Whether to redraw ``perplexity.png`` now: process 0, at most every ``train.plot_every_sec``, always last."""
    if jax.process_index() != 0:
      return False
    now = self.progress.elapsed()
    if last or self.plotted_at is None or now - self.plotted_at >= self.config.train.plot_every_sec:
      self.plotted_at = now
      return True
    return False

  @property
  def num_epochs(self) -> int:
    return self.config.train.num_epochs

  @property
  def loss_limit(self) -> float:
    """Mean NLL (nats per token) above which the run has diverged: ``train.max_loss``, or where exp overflows."""
    return self.config.train.get("max_loss", 0.0) or MAX_LOSS

  def save(self, saved: SavedState, metrics: dict[str, float] | None = None,
           step_losses: Sequence[Any] = (), first_step: int = 0) -> None:
    """Saves a checkpoint only of finite parameters whose loss on a fixed probe minibatch is below the divergence
    limit (so "the last good checkpoint" always evaluates to a finite perplexity)."""
    probe_loss = self.probe_loss(saved.state.params)
    if not probe_loss <= self.loss_limit:  # NaN too
      self.fail_non_finite(step_losses, first_step, f"the parameters at step {int(saved.state.step)} give a loss of "
                           f"{probe_loss:.4g} nats per token on a probe minibatch (not saved)")
    step = int(saved.state.step)
    self.checkpointer.save(step, saved.to_tree(), self.config, self.corpus.vocab, metrics,
                           fingerprint=self.corpus_fingerprint, records=list(self.records))
    self.last_good_step = step

  def probe_loss(self, params) -> float:
    """Mean NLL (nats per token) of ``params`` on the first validation minibatch (else the first training one),
    from a zero state; inf when any parameter is non-finite."""
    if self._probe is None:
      inputs, targets = (self.val_batches or pipeline.epoch_batches(self.config, self.corpus, 1))[0]

      def loss(p):
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(leaf)) for leaf in jax.tree.leaves(p)]))
        return jnp.where(finite, jnp.mean(loss_lib.token_nll(self.model.apply(p, inputs)[0], targets)), jnp.inf)
      self._probe = jax.jit(loss)
    return float(self._probe(params))

  def fail_non_finite(self, step_losses: Sequence[Any], first_step: int, what: str = "") -> None:
    losses = np.asarray(jnp.stack(step_losses)) if len(step_losses) else np.zeros(0)
    per_token = losses / np.maximum(1, self.config.data.batch_size * self.config.data.num_steps)
    bad_steps = np.flatnonzero(~np.isfinite(per_token) | (per_token > self.loss_limit))
    if not what:
      where = int(bad_steps[0]) if len(bad_steps) else len(losses) - 1
      what = f"the training loss became {per_token[where]:.4g} nats per token at step {first_step + where}"
    self.checkpointer.wait()
    kept = (f"the last good checkpoint is step {self.last_good_step} in {self.checkpointer.manager.directory} "
            f"(kept)" if self.last_good_step is not None else "no checkpoint was written yet")
    raise NonFiniteLossError(f"Training diverged: {what}; stopped, {kept}. The limit is a mean loss of "
                             f"{self.loss_limit:.4g} nats per token (train.max_loss); lower "
                             f"--config.optimizer.learning_rate or set --config.optimizer.clip_norm.")

  def zero_carry(self):
    return sharding_lib.split_leading(self.model.zero_carry(self.config.data.batch_size), self.devices)


def start_run(config: ml_collections.ConfigDict, workdir) -> Run:
  """Validates the config, loads the corpus, validates them together and builds the model, optimizer and compiled
  step; writes nothing."""
  validation.check(config)
  corpus = corpora.load(config.data)
  validation.check(config, corpus)
  model = models.from_config(config.model, len(corpus.vocab))
  validation.check_model(model)
  d = config.data
  line = model.recurrence_line(d.batch_size, d.num_steps)
  if line and jax.process_index() == 0:
    logging.warning(line)
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  carry_state = pipeline.carries_state(config.data)
  logging.info("Corpus %s (%s): %d training tokens, %d validation tokens, vocabulary %d.", config.data.corpus,
               config.data.edition, len(corpus.train_ids), len(corpus.val_ids), len(corpus.vocab))
  mesh = sharding_lib.data_parallel_mesh(config.data.batch_size)  # one device: placement is a no-op
  return Run(config=config, workdir=workdir, corpus=corpus, model=model, optimizer=optimizer, carry_state=carry_state,
             devices=mesh, step_fn=compile_train_step(model, optimizer, carry_state, mesh),
             val_batches=pipeline.validation_batches(config, corpus),
             corpus_fingerprint=corpora.fingerprint(corpus, config.data.edition))


def restore_or_init(run: Run) -> SavedState:
  """The latest checkpoint's state and data position (exactly as saved), or fresh parameters at epoch 1; the
  log (``metrics.jsonl``) made to read as if the run had never stopped."""
  config = run.config
  state = create_train_state(run.model, run.optimizer, config.seed, config.data.batch_size,
                             averaging=averages(config))
  latest, meta = newest_checkpoint(run)
  saved = SavedState(state, nll_sum=jnp.zeros(()))
  if latest is None:
    start_log_fresh(run)
  else:
    where = str(run.checkpointer.directory)
    checkpoint_lib.check_compatible(meta["config"], config, where)
    checkpoint_lib.check_fingerprint(meta, run.corpus_fingerprint, where)
    saved = SavedState.from_tree(run.checkpointer.restore_state(latest, abstract_saved_state(state),
                                                                meta.get("checksums")))
    restore_log(run, latest, meta, finished=saved.epoch > run.num_epochs)
    if jax.process_index() == 0:
      print(f"Resumed from checkpoint step {latest} (epoch {saved.epoch}, batch {saved.batch}).", flush=True)
  run.last_good_step = latest
  saved.state = sharding_lib.place_train_state(saved.state, run.devices)
  return saved


def newest_checkpoint(run: Run) -> tuple[int | None, dict[str, Any] | None]:
  """The newest step whose saved step agrees with its directory's number, and its meta; each newer directory
  that disagrees (a copied or renamed step) is moved aside with one line, so neither resume nor pruning uses it."""
  latest, notes = run.checkpointer.newest_usable()
  if notes:
    if jax.process_index() == 0:
      for step in [s for s in run.checkpointer.all_steps() if latest is None or s > latest]:
        aside = workdir_lib.set_aside_step(run.workdir, step)
        print(f"warning: {notes.pop(0)}: moved to {aside}; "
              f"{'resuming from step ' + str(latest) if latest is not None else 'no checkpoint left'}.", flush=True)
    if jax.process_count() > 1:
      multihost_utils.sync_global_devices("lstm_jax misnumbered steps moved")
    run.checkpointer.manager.reload()
  return latest, None if latest is None else run.checkpointer.read_meta(latest)


def start_log_fresh(run: Run) -> None:
  """A run without a checkpoint starts from scratch: an earlier attempt's log, TensorBoard events and plot
  (killed before its first checkpoint) are set aside, so no epoch is logged twice."""
  if jax.process_index() == 0 and workdir_lib.metrics_path(run.workdir).exists():
    aside = workdir_lib.set_aside(run.workdir, (workdir_lib.METRICS_FILE, workdir_lib.TENSORBOARD_DIR, plots.RUN_PLOT))
    if aside is not None:
      print(f"No checkpoint to resume from: starting from scratch; the earlier attempt's log moved to {aside}.",
            flush=True)
  run.records = []


def restore_log(run: Run, step: int, meta: dict[str, Any], finished: bool) -> None:
  """``run.records`` and ``metrics.jsonl`` as they stood at checkpoint ``step``: rebuilt from the checkpoint's
  copy of the log (a damaged, cut or missing file is said in one line), or, for a checkpoint without one, the
  file truncated to the step. A finished run keeps its final record (``run.final``)."""
  primary = jax.process_index() == 0
  records = meta.get("records")
  if records is None:  # written before checkpoints held the log (or by a population)
    if primary:
      final = _final_at(run.workdir, step) if finished else None
      workdir_lib.truncate_metrics(run.workdir, step)
      run.records = workdir_lib.read_metrics(run.workdir)
      if final is not None:
        run.final = final
        workdir_lib.write_metrics(run.workdir, run.records + [final])
    return
  run.records = list(records)
  if not primary:
    return
  try:
    current, damage = workdir_lib.read_metrics(run.workdir), None
  except workdir_lib.MetricsLogError as e:
    current, damage = None, str(e)
  if current is not None:
    run.final = _final_at(run.workdir, step, current) if finished else None
    if not workdir_lib.metrics_path(run.workdir).exists() and records:
      damage = f"{workdir_lib.metrics_path(run.workdir)} is missing"
    elif [r for r in current if r["step"] <= step and not r.get("final")] != records:
      damage = f"{workdir_lib.metrics_path(run.workdir)} does not match the checkpoint's copy of the log"
  workdir_lib.write_metrics(run.workdir, run.records + ([run.final] if run.final else []))
  if damage:
    print(f"Repaired the log: {damage.rstrip('.')}; rebuilt it from checkpoint step {step} "
          f"({len(records)} records).", flush=True)


def _final_at(workdir, step: int, records: list[dict[str, Any]] | None = None) -> dict[str, Any] | None:
  """The log's final record written at ``step`` (None: none, or a damaged log)."""
  try:
    records = workdir_lib.read_metrics(workdir) if records is None else records
  except workdir_lib.MetricsLogError:
    return None
  finals = [r for r in records if r.get("final") and r["step"] == step]
  return finals[-1] if finals else None


def train_epoch(run: Run, saved: SavedState, epoch: int, stop: StopRequest) -> tuple[list, list, int]:
  """Trains ``saved`` through epoch ``epoch`` from its data position, in place; returns the per-step summed losses,
  token counts and the number of minibatches in the epoch. Saves every ``train.checkpoint_every_steps`` and, on a
  stop request, saves and exits."""
  batches = pipeline.epoch_batches(run.config, run.corpus, epoch)
  if saved.batch == 0:
    saved.nll_sum, saved.tokens = jnp.zeros(()), 0
    if run.carry_state:
      saved.state = saved.state._replace(carry=run.zero_carry())
  elif run.progress is not None:
    run.progress.resumed_within(saved.batch / len(batches))
  every_steps = run.config.train.checkpoint_every_steps
  step_losses, step_tokens, first_step = [], [], int(saved.state.step) + 1
  for index in range(saved.batch, len(batches)):
    inputs, targets = sharding_lib.split_leading(batches[index], run.devices)
    saved.state, step_metrics = run.step_fn(saved.state, inputs, targets)
    step_losses.append(step_metrics["nll_sum"])
    step_tokens.append(targets.size)
    saved.nll_sum = saved.nll_sum + step_metrics["nll_sum"]
    saved.tokens += targets.size
    saved.batch = index + 1
    run.throughput.add(targets.size)
    if run.ticker is not None and run.ticker.due():
      run.ticker.say(epoch, index + 1, len(batches), int(saved.state.step), float(step_metrics["nll_sum"]) / targets.size)
    save_now = every_steps > 0 and int(saved.state.step) % every_steps == 0 and index + 1 < len(batches)
    if save_now or stop.signal:
      if not float(saved.nll_sum) / saved.tokens <= run.loss_limit:  # NaN too
        run.fail_non_finite(step_losses, first_step)
      run.save(saved, step_losses=step_losses, first_step=first_step)
    if stop.signal:
      run.checkpointer.wait()
      print(f"Received {stop.signal}: saved checkpoint step {int(saved.state.step)} in "
            f"{run.checkpointer.manager.directory}; rerun the same command to resume.", flush=True)
      raise SystemExit(0)
  if not float(saved.nll_sum) / saved.tokens <= run.loss_limit:  # NaN too
    run.fail_non_finite(step_losses, first_step)
  return step_losses, step_tokens, len(batches)


def end_of_epoch(run: Run, saved: SavedState, epoch: int, epoch_steps: tuple[list, list, int]) -> dict[str, Any]:
  """Builds, prints and writes the epoch's record and saves when due, then (when due) redraws the run's plot and
  generates samples, which come last so that nothing they do can cost the epoch's checkpoint or record. A failed
  background save of an earlier checkpoint is raised first."""
  run.checkpointer.check()
  config, num_epochs, step = run.config, run.num_epochs, int(saved.state.step)
  record = epoch_record(epoch, saved.nll_sum, saved.tokens, *epoch_steps, config)
  if run.val_batches and is_due(epoch, config.train.eval_every_epochs, num_epochs):
    record.update(validation_metrics(run, evaluation_params(saved.state)))
    if averaging_starts(run, saved.state, record):
      saved.state = start_average(saved.state)
      record["averaging_from_step"] = step
      run.progress.say(f"validation stopped improving: averaging the iterates from step {step} (NT-ASGD)")
  if run.corpus.vocab.separator == "":  # character tokens: bits per character beside perplexity
    record.update(bits_per_character(record))
  run.progress.advance()
  logging_now = is_due(epoch, config.train.log_every_epochs, num_epochs)
  if logging_now:
    record["tokens_per_sec"] = run.throughput.take()
    run.progress.say(progress_line(record, step, num_epochs) + "  " + run.progress.timing())
  record["elapsed_sec"] = run.progress.elapsed()
  run.records.append(run.writer.write(step, record))
  run.writer.flush()
  if is_due(epoch, config.train.checkpoint_every_epochs, num_epochs):
    run.save(SavedState(saved.state, epoch=epoch + 1),
             checkpoint_metrics(run, evaluation_params(saved.state), record))
  if logging_now and run.plot_due(last=epoch == num_epochs):
    plot_file = workdir_lib.path(run.workdir) / plots.RUN_PLOT
    try:
      plots.plot_run(run.records, plot_file, title=f"{config.model.cell}, {config.data.corpus}")
    except OSError as e:
      raise workdir_lib.write_failed(plot_file, e) from e
  if is_due(epoch, config.train.generate_every_epochs, num_epochs):
    try:  # after the checkpoint and record: a failed sample is reported and costs nothing
      params = evaluation_params(saved.state)
      samples = {prefix: generate_lib.generate_text(run.model, params, run.corpus.vocab, prefix,
                                                    config.generate.num_tokens, method=config.generate.method,
                                                    temperature=config.generate.temperature,
                                                    top_k=config.generate.top_k, seed=config.seed)
                 for prefix in config.generate.prefixes}
    except Exception as e:  # pylint: disable=broad-except
      samples = {}
      print(f"warning: sampling at step {step} failed ({type(e).__name__}: {e}); the run goes on.", flush=True)
    for text in samples.values():
      run.progress.say(f" - {text}")
    run.writer.write_texts(step, samples)
  return record


def averages(config: ml_collections.ConfigDict) -> bool:
  """Whether the run averages its iterates (``optimizer.averaging``)."""
  return config.optimizer.get("averaging", "none") != "none"


def averaging_starts(run: Run, state: TrainState, record: dict[str, Any]) -> bool:
  """NT-ASGD's trigger (Merity et al., 2017): averaging is on but not started, and this check's validation NLL is
  worse than the best of the checks before the last ``optimizer.nonmono`` (read from the run's log)."""
  if state.average is None or int(state.average["count"]) > 0 or "val_nll" not in record:
    return False
  earlier = [r["val_nll"] for r in run.records if "val_nll" in r and not r.get("final")]
  nonmono = run.config.optimizer.nonmono
  return len(earlier) > nonmono and record["val_nll"] > min(earlier[:-nonmono])


def validation_metrics(run: Run, params) -> dict[str, Any]:
  """The validation split's NLL, perplexity and the rest, as ``val_*`` record entries."""
  evaluation = evaluate_lib.evaluate_batches(run.model, params, run.val_batches, carry_state=run.carry_state)
  return evaluation.as_dict("val_")


def checkpoint_metrics(run: Run, params, record: dict[str, Any]) -> dict[str, float]:
  """What an end-of-epoch checkpoint is ranked by for "best": its validation perplexity (computed for the
  checkpoint when the record has none), else, without a validation split, its training perplexity."""
  if run.val_batches and "val_perplexity" not in record:
    return checkpoint_lib.metrics_of(validation_metrics(run, params))
  return checkpoint_lib.metrics_of(record)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir, stop: StopRequest | None = None
                       ) -> dict[str, Any]:
  """Trains the model a config describes, logging to stdout and ``workdir``; returns the final metrics.

  A workdir that holds checkpoints is resumed from the latest one (``config.train.resume``), exactly: same
  parameters, optimizer state, RNG, data position, carried state and epoch sums as if the run had never stopped.
  SIGINT / SIGTERM before training starts exit at once (status 130 / 143), later they save and exit (status 0);
  ``stop``: the request object to use (``lstm_jax.main`` passes one holding signals received before this call).
  """
  with stop or StopRequest() as stop:
    stop.exit_if_requested("before training started")
    run = start_run(config, workdir)
    stop.exit_if_requested("before training started")
    workdir_lib.prepare(workdir)
    primary = jax.process_index() == 0  # in a multi-host job, process 0 owns the workdir's lock and files
    with workdir_lib.lock(workdir) if primary else contextlib.nullcontext():
      if not config.train.resume and primary:
        aside = workdir_lib.set_aside(workdir)
        if aside is not None:
          print(f"Starting fresh: earlier checkpoints and logs moved to {aside}", flush=True)
      if jax.process_count() > 1:  # the others start once process 0 holds the lock and has set earlier runs aside
        multihost_utils.sync_global_devices("lstm_jax workdir ready")
      run.checkpointer = checkpoint_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
      try:
        saved = restore_or_init(run)
        if primary:
          workdir_lib.write_config(workdir, config.to_dict(), vocab_size=len(run.corpus.vocab))
        stop.exit_if_requested("before training started")
        purge_step = run.last_good_step + 1 if run.last_good_step is not None else None
        with metrics_lib.MetricWriter(workdir, purge_step=purge_step) as run.writer:
          summary = _train_epochs(run, saved, stop)
      except BaseException:
        with contextlib.suppress(checkpoint_lib.CheckpointError):  # the error above is the news
          run.checkpointer.close()
        raise
      run.checkpointer.close()
      return summary


def _train_epochs(run: Run, saved: SavedState, stop: StopRequest) -> dict[str, Any]:
  config = run.config
  if saved.epoch > run.num_epochs:
    return already_trained(run, int(saved.state.step))
  quiet = config.train.quiet or jax.process_index() != 0  # a multi-host job speaks through process 0
  run.progress = progress_lib.Progress(run.num_epochs, done=saved.epoch - 1, quiet=quiet)
  run.ticker = progress_lib.BatchTicker(run.progress, config.train.progress_every_sec)
  summary: dict[str, Any] = {}
  for epoch in range(saved.epoch, run.num_epochs + 1):
    saved.epoch = epoch
    epoch_steps = train_epoch(run, saved, epoch, stop)
    summary = end_of_epoch(run, saved, epoch, epoch_steps)
    saved = SavedState(saved.state, epoch=epoch + 1, nll_sum=jnp.zeros(()))
  summary["wall_time_sec"] = run.progress.elapsed()
  run.checkpointer.wait()
  run.writer.write_final(int(saved.state.step), summary, config.to_dict())
  return summary


def already_trained(run: Run, step: int) -> dict[str, Any]:
  """A rerun of a finished run: its final record as it stands (its wall time kept), or, when the log lost it,
  one rebuilt from the last epoch's record (that session's time so far)."""
  done = f"Already trained for {run.num_epochs} epochs in {run.workdir}; nothing to do"
  if run.final is not None:
    print(f"{done}.", flush=True)
    return {k: v for k, v in run.final.items() if k not in ("step", "final")}
  epochs = [r for r in run.records if "epoch" in r and not r.get("final")]
  if not epochs:
    print(f"{done} (its {workdir_lib.METRICS_FILE} is gone and checkpoint step {step} holds no copy of it).",
          flush=True)
    return {}
  summary = {k: v for k, v in epochs[-1].items() if k != "step"}
  summary["wall_time_sec"] = summary.get("elapsed_sec", 0.0)
  run.writer.write_final(step, summary, run.config.to_dict())
  print(f"{done} but write its missing final record (wall time from its last epoch's record).", flush=True)
  return summary
