"""Population training: K sweep points that share every shape, trained as ONE jitted program.

The members differ only in ``POPULATION_KEYS`` (learning rate, clipping threshold, seed). Their train states are
stacked along a leading member axis ``[K, ...]`` and ``train.loop.train_step`` is ``jax.vmap``-ed over it; the learning
rate and the clipping threshold are per-member arrays in the optimizer state (``optax.inject_hyperparams``), so one
compiled step serves every member. With several devices the member axis is split over them: each device steps its
own members (``jax.shard_map``), so the Pallas kernels run there as on one device.

Each member behaves like its own run of ``train.loop.train_and_evaluate``: same initial parameters, same data order
(per-member seed), same updates, its own workdir with ``config.json``, ``metrics.jsonl`` (ending in a ``"final"``
record) and a final checkpoint in the single-run layout (``checkpoint.load_params`` reads it, and re-running the
point as a single run finds it finished). Members whose epochs hold fewer minibatches (another seed's offset) sit
out the extra steps. An interrupted population restarts from scratch; finished members are not retrained.
"""

from __future__ import annotations

import functools
import json
import math
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.sharding import PartitionSpec

from lstm_jax.data import corpora
from lstm_jax.data import pipeline
from lstm_jax.models import factory as models
from lstm_jax.models.placement import Placement
from lstm_jax.train import checkpoint as checkpoint_lib
from lstm_jax.train import evaluate as evaluate_lib
from lstm_jax.train import loop as train_lib
from lstm_jax.train import metrics as metrics_lib
from lstm_jax.train import optimizer as optimizer_lib
from lstm_jax.train import sharding as sharding_lib
from lstm_jax.train import validation
from lstm_jax.train import workdir as workdir_lib
from lstm_jax.train.state import SavedState, TrainState, create_train_state

POPULATION_KEYS = ("seed", "optimizer.learning_rate", "optimizer.clip_norm")
_IGNORED_KEYS = ("train.", "generate.")  # logging cadence and samples may differ; they do not change the math


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
  out = {}
  for key, value in d.items():
    out.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
  return out


def check_shareable(configs: Sequence[ml_collections.ConfigDict]) -> None:
  """Raises a ``ValueError`` naming every field, other than ``POPULATION_KEYS``, in which the members differ."""
  flat = [_flatten(c.to_dict()) for c in configs]
  differing = sorted(k for k in flat[0] if k not in POPULATION_KEYS and not k.startswith(_IGNORED_KEYS)
                     and len({json.dumps(f.get(k), default=str) for f in flat}) > 1)
  differing += sorted(k for k in ("train.num_epochs",) if len({f[k] for f in flat}) > 1)
  if differing:
    raise ValueError(f"A population may differ only in {POPULATION_KEYS}; these members also differ in "
                     f"{differing}. Run those points as separate populations or as single runs.")


def _member(tree: Any, k: int) -> Any:
  return jax.tree.map(lambda x: x[k], tree)


class Population:
  """The compiled pieces of a population: ``init() -> states [K, ...]`` and ``step(states, inputs_KBT,
  targets_KBT, active_K) -> (states, metrics [K])``. ``target``: the platform the kernels are built for
  (``Placement.target``; "" this machine); the population places its members over ``devices`` itself."""

  def __init__(self, configs: Sequence[ml_collections.ConfigDict], vocab_size: int, devices=None,
               target: str = ""):
    check_shareable(configs)
    base = configs[0]
    self.size = len(configs)
    self.mesh = sharding_lib.mesh(devices, axis_name="population")
    # Members that divide over the devices: each device steps its own members (a shard_map), so a kernel sees one
    # device. Members that do not are replicated on every device, where a kernel call cannot go (see envelope).
    per_device = self.mesh.size == 1 or self.size % self.mesh.size == 0
    placement = Placement(target, devices=1) if per_device else \
        Placement(target, devices=self.mesh.size, split="members")
    self.model = models.from_config(base.model, vocab_size, placement=placement)
    validation.check_model(self.model)
    self.carry_state = pipeline.carries_state(base.data)
    self.factory = optimizer_lib.member_optimizer(base.optimizer)
    self.seeds = np.asarray([c.seed for c in configs], np.int32)
    self.learning_rates = np.asarray([c.optimizer.learning_rate for c in configs], np.float32)
    self.clip_norms = np.asarray([optimizer_lib.member_clip_norm(c.optimizer.clip_norm) for c in configs],
                                 np.float32)
    step = functools.partial(train_lib.train_step, model=self.model, optimizer=self.factory(0.0, 0.0),
                             carry_state=self.carry_state)  # update() reads each member's values from its state

    def masked_step(state, inputs_BT, targets_BT, active):
      new_state, metrics = step(state, inputs_BT, targets_BT)
      keep = lambda new, old: jnp.where(active, new, old)
      new_state = new_state._replace(params=jax.tree.map(keep, new_state.params, state.params),
                                     opt_state=jax.tree.map(keep, new_state.opt_state, state.opt_state),
                                     step=keep(new_state.step, state.step),
                                     carry=jax.tree.map(keep, new_state.carry, state.carry))
      return new_state, jax.tree.map(lambda m: jnp.where(active, m, 0.0), metrics)

    member_steps = jax.vmap(masked_step)
    if per_device and self.mesh.size > 1:
      members = PartitionSpec(self.mesh.axis_names[0])
      member_steps = jax.shard_map(member_steps, mesh=self.mesh, in_specs=members, out_specs=members,
                                   check_vma=False)  # pallas_call has no varying-axes rule
    self._step = jax.jit(member_steps, donate_argnums=0)
    batch_size = base.data.batch_size

    def init_member(seed, learning_rate, clip_norm):
      return create_train_state(self.model, self.factory(learning_rate, clip_norm), seed, batch_size)

    self._init = jax.jit(jax.vmap(init_member))

  def place(self, tree: Any) -> Any:
    return sharding_lib.split_leading(tree, self.mesh)

  def init(self) -> TrainState:
    return self.place(self._init(*self.place((self.seeds, self.learning_rates, self.clip_norms))))

  def step(self, states, inputs_KBT, targets_KBT, active_K):
    return self._step(states, *self.place((inputs_KBT, targets_KBT, active_K)))

  def zero_carry(self, batch_size: int):
    return self.place(jax.tree.map(lambda x: jnp.broadcast_to(x, (self.size, *x.shape)),
                                   self.model.zero_carry(batch_size)))


def stack_epoch(epochs: Sequence[list], index: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Minibatch ``index`` of every member's epoch, stacked ``[K, B, T]``; members past their last batch get a
  stand-in batch and ``active=False``."""
  present = [e[index] for e in epochs if index < len(e)]
  if len({b[0].shape for b in present}) > 1:
    raise ValueError("Population members' minibatches differ in shape; give them the same data settings.")
  stand_in = present[0]
  batches = [e[index] if index < len(e) else stand_in for e in epochs]
  return (np.stack([b[0] for b in batches]), np.stack([b[1] for b in batches]),
          np.asarray([index < len(e) for e in epochs]))


def train_population(configs: Sequence[ml_collections.ConfigDict], workdirs: Sequence[workdir_lib.PathLike],
                     devices=None) -> list[dict[str, Any]]:
  """Trains every config (one member each) together; writes each member's workdir; returns their final records."""
  if len(configs) != len(workdirs) or not configs:
    raise ValueError("Pass one workdir per config (and at least one config).")
  base = configs[0]
  corpus = corpora.load(base.data)
  population = Population(configs, len(corpus.vocab), devices)
  for config, workdir in zip(configs, workdirs):
    workdir_lib.prepare(workdir)
    workdir_lib.clear_metrics(workdir)  # an interrupted population restarts from scratch
    if jax.process_index() == 0:
      workdir_lib.write_config(workdir, config.to_dict(), vocab_size=len(corpus.vocab),
                               population_size=population.size)
  writers = [metrics_lib.MetricWriter(workdir) for workdir in workdirs]
  try:
    states, records, wall_time = _train_epochs(population, configs, corpus, writers)
    for k, (config, workdir) in enumerate(zip(configs, workdirs)):
      _save_member(_member(states, k), config, workdir, corpus.vocab, records[k])
      records[k] = {**records[k], "wall_time_sec": wall_time, "population_size": population.size}
      writers[k].write_final(int(states.step[k]), records[k], config.to_dict())
  finally:
    for writer in writers:
      writer.close()
  return records


def _train_epochs(population: Population, configs, corpus, writers):
  """Every epoch of every member; returns the final states ``[K, ...]``, each member's last record and the wall
  time in seconds."""
  base, num_epochs = configs[0], configs[0].train.num_epochs
  val_batches = pipeline.validation_batches(base, corpus)
  states = population.init()
  records: list[dict[str, Any]] = [{} for _ in configs]
  tokens_since_log, time_of_log, start = 0, time.perf_counter(), time.perf_counter()
  for epoch in range(1, num_epochs + 1):
    epochs = [pipeline.epoch_batches(config, corpus, epoch) for config in configs]
    if population.carry_state:
      states = states._replace(carry=population.zero_carry(base.data.batch_size))
    nll_sums = jnp.zeros((population.size,))
    tokens = np.zeros(population.size, np.int64)
    step_losses = []
    for index in range(max(len(e) for e in epochs)):
      inputs, targets, active = stack_epoch(epochs, index)
      states, metrics = population.step(states, inputs, targets, active)
      nll_sums = nll_sums + metrics["nll_sum"]
      step_losses.append(metrics["nll_sum"])
      tokens += active * targets[0].size
      tokens_since_log += targets[0].size
    log_now = train_lib.is_due(epoch, base.train.log_every_epochs, num_epochs)
    if log_now:
      now = time.perf_counter()
      tokens_per_sec, tokens_since_log, time_of_log = tokens_since_log / (now - time_of_log), 0, now
    evaluate_now = val_batches and train_lib.is_due(epoch, base.train.eval_every_epochs, num_epochs)
    nll_sums = np.asarray(nll_sums)
    for k, config in enumerate(configs):
      losses_k = [m[k] for m in step_losses[:len(epochs[k])]]
      record = train_lib.epoch_record(epoch, nll_sums[k], int(tokens[k]), losses_k,
                                      [targets[0].size] * len(losses_k), len(epochs[k]), config)
      if evaluate_now and math.isfinite(record["train_loss"]):
        evaluation = evaluate_lib.evaluate_batches(population.model, _member(states.params, k), val_batches,
                                                   carry_state=population.carry_state)
        record.update(evaluation.as_dict("val_"))
      if log_now:
        record["tokens_per_sec"] = tokens_per_sec  # each member's own tokens; all members advance together
      record["elapsed_sec"] = time.perf_counter() - start
      writers[k].write(int(states.step[k]), record)
      records[k] = record
    if log_now:
      print(_progress_line(epoch, records, tokens_per_sec), flush=True)
  return states, records, time.perf_counter() - start


def _progress_line(epoch: int, records: list[dict[str, Any]], tokens_per_sec: float) -> str:
  perplexities = np.asarray([r["train_perplexity"] for r in records])
  best = int(np.nanargmin(np.where(np.isfinite(perplexities), perplexities, np.nan))) \
      if np.isfinite(perplexities).any() else 0
  return (f"epoch {epoch:4d}  population {len(records)}  perplexity min {records[best]['train_perplexity']:.4f}"
          f" (member {best})  member tokens/s {tokens_per_sec:,.0f}")


def _save_member(member: TrainState, config, workdir, vocab, record: dict[str, Any]) -> None:
  """The member's final checkpoint in the single-run layout (the optimizer state ``make_optimizer`` holds)."""
  member = member._replace(opt_state=optimizer_lib.single_run_opt_state(member.opt_state,
                                                                        config.optimizer.clip_norm))
  checkpointer = checkpoint_lib.Checkpointer(workdir, keep=config.train.keep_checkpoints)
  try:
    checkpointer.save(int(member.step), SavedState(member, epoch=config.train.num_epochs + 1).to_tree(), config,
                      vocab, checkpoint_lib.metrics_of(record))
  finally:
    checkpointer.close()
