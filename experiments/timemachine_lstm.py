"""The main job: the from-scratch LSTM on The Time Machine, early-2019 d2l-en (MXNet), book_tables.md section 0.2.

Lowercased, newlines to spaces, first 10,000 characters, vocabulary 43 (one-hot inputs); hidden 256, 35 steps,
batch 32, consecutive (sequential) sampling with the state carried across minibatches; SGD lr 100 with global-norm
clipping at 0.01; N(0, 0.01) weights, zero biases; 160 epochs.

Command:   python -m lstm_jax.main --config experiments/timemachine_lstm.py --workdir runs/timemachine_lstm
Book:      perplexity @40 7.95, @80 3.83, @120 1.92, @160 1.32 (another run: 1.29).
Expected:  about 1.3 at epoch 160 (median of 3 seeds); under a minute on a 2-core CPU.
"""

from lstm_jax import config as config_lib


def get_config():
  config = config_lib.default_config()
  config.data.corpus = "timemachine"
  config.data.edition = "d2l_2019"
  config.data.sampling = "sequential"
  config.model.cell = "lstm"
  config.model.hidden_size = 256
  config.optimizer.learning_rate = 100.0
  config.optimizer.clip_norm = 0.01
  config.train.num_epochs = 160
  config.generate.prefixes = ("traveller", "time traveller")
  return config
