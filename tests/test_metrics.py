"""Metric writers and progress: TensorBoard tags are hierarchical, the final record is written once (JSON) with
the config as hyperparameters, samples become text summaries, the writer closes on every exit path; the per-run
plot is a PNG; progress lines carry k/N, elapsed and an ETA."""

import json
import pytest
from tensorboard.backend.event_processing import event_accumulator

from lstm_jax.train import metrics
from lstm_jax.train import plots
from lstm_jax.train import progress
from lstm_jax.train import workdir


def _tags(directory) -> set[str]:
  """Every tag TensorBoard's own event reader finds in the runs under ``directory`` (scalars, tensors, and the
  text and hparams plugins' summaries)."""
  tags = set()
  for run in sorted({path.parent for path in directory.rglob("events.out.tfevents.*")}):
    accumulator = event_accumulator.EventAccumulator(str(run), size_guidance={event_accumulator.TENSORS: 0})
    accumulator.Reload()
    tags |= {tag for kind in ("scalars", "tensors") for tag in accumulator.Tags()[kind]}
    for plugin in ("hparams", "text"):
      try:
        tags |= set(accumulator.PluginTagToContent(plugin))
      except KeyError:  # no summary of that plugin in this run
        pass
  return tags


def test_records_go_to_json_lines_and_hierarchical_tensorboard_tags(tmp_path):
  with metrics.MetricWriter(tmp_path) as writer:
    writer.write(8, {"epoch": 1, "train_loss": 2.5, "train_perplexity": 12.2, "val_perplexity": 13.0,
                     "tokens_per_sec": 1000.0, "train_perplexity_nan": float("nan")})
    writer.write_texts(8, {"time traveller": "time traveller said"})
    writer.write_final(8, {"train_perplexity": 12.2, "wall_time_sec": 3.0}, {"model": {"hidden_size": 4}})
  records = workdir.read_metrics(tmp_path)
  assert records[0]["train_perplexity"] == 12.2 and records[0]["train_perplexity_nan"] == "nan"
  assert [r.get("final") for r in records] == [None, 1]  # the final record once
  tags = _tags(tmp_path / "tensorboard")
  assert {"train/loss", "train/perplexity", "val/perplexity", "perf/tokens_per_sec", "progress/epoch"} <= tags
  assert "train/perplexity_nan" not in tags  # non-finite numbers stay out of TensorBoard
  assert any(tag.startswith("samples/") for tag in tags)
  assert any("hparams" in tag for tag in tags)
  assert metrics.tag("val_bits_per_token") == "val/bits_per_token" and metrics.tag("grad_norm") == "other/grad_norm"


def test_the_writer_is_closed_when_the_block_raises(tmp_path):
  with pytest.raises(FloatingPointError):
    with metrics.MetricWriter(tmp_path) as writer:
      raise FloatingPointError("loss became nan")
  assert writer._tensorboard is None


def test_run_plot_is_a_png_with_log_y_when_the_range_spans_a_decade(tmp_path):
  records = [{"epoch": e, "train_perplexity": 40.0 / e, "val_perplexity": 45.0 / e} for e in range(1, 21)]
  plots.plot_run(records, tmp_path / "perplexity.png", title="lstm")
  assert (tmp_path / "perplexity.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
  assert plots.spans_a_decade([40.0, 2.0]) and not plots.spans_a_decade([5.0, 1.0])


def test_run_plot_ticks_whole_epochs_only(tmp_path, monkeypatch):
  figures = []
  monkeypatch.setattr(plots, "save", lambda fig, path: figures.append(fig))
  plots.plot_run([{"epoch": 1, "train_perplexity": 27.2}, {"epoch": 2, "train_perplexity": 20.8}], tmp_path / "p.png")
  ticks = figures[0].axes[0].get_xticks()
  assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_progress_eta_counts_this_sessions_units_only():
  now = [100.0]
  tracker = progress.Progress(total=10, done=4, clock=lambda: now[0])
  assert tracker.eta() is None and "ETA ?" in tracker.timing()
  now[0] = 106.0
  tracker.advance(2)  # 2 epochs in 6 s: 3 s each, 4 left
  assert tracker.eta() == pytest.approx(12.0)
  assert tracker.timing() == "elapsed 6s  ETA 12s"
  assert progress.duration(75) == "1m15s" and progress.duration(3725) == "1h02m"


def test_progress_eta_of_a_run_resumed_mid_epoch_counts_only_the_batches_run_here():
  now = [0.0]
  tracker = progress.Progress(total=10, done=2, clock=lambda: now[0])
  tracker.resumed_within(0.75)  # resumed three quarters into epoch 3
  now[0] = 10.0  # a tenth of an epoch in 10 s: 100 s an epoch, 7.15 epochs left
  assert tracker.eta(fraction_of_next=0.85) == pytest.approx(715.0)
  now[0] = 25.0
  tracker.advance()  # epoch 3 done (0.25 epochs in 25 s), 7 left
  assert tracker.eta() == pytest.approx(700.0)


def test_batch_ticker_speaks_at_most_every_interval(capsys):
  now = [0.0]
  tracker = progress.Progress(total=3, clock=lambda: now[0])
  ticker = progress.BatchTicker(tracker, every_sec=10.0)
  assert not ticker.due()
  now[0] = 11.0
  assert ticker.due()
  ticker.say(1, 50, 100, 50, 2.0)
  assert not ticker.due()
  assert "epoch 1/3  batch 50/100  step 50  loss 2.0000" in capsys.readouterr().out
  assert not progress.BatchTicker(progress.Progress(3, quiet=True, clock=lambda: 1e9), 1.0).due()


def test_each_flush_puts_the_epochs_scalars_on_disk_before_close(tmp_path):
  writer = metrics.MetricWriter(tmp_path)
  writer.write(8, {"epoch": 1, "train_perplexity": 12.2})
  writer.flush()
  assert "train/perplexity" in _tags(tmp_path / "tensorboard")  # read while the writer is still open
  writer.close()


def test_a_full_disk_under_tensorboard_is_one_error_naming_the_events_file_at_once(tmp_path, monkeypatch):
  import errno
  import time
  from tensorboardX.event_file_writer import EventsWriter

  def full(self, *args):
    raise OSError(errno.ENOSPC, "No space left on device")

  writer = metrics.MetricWriter(tmp_path)
  monkeypatch.setattr(EventsWriter, "write_event", full)
  start = time.monotonic()
  with pytest.raises(workdir.WriteError, match=r"Cannot write .*tensorboard/events\.out\.tfevents\.\S+ \(No space "
                                               r"left on device\); free space"):
    writer.write(8, {"epoch": 1, "train_perplexity": 12.2})
  assert time.monotonic() - start < 5
  writer.close()
