"""Training equivalence: the project's train loop against references written outside it.

- ``reference``: a plain ``jax.grad`` loop (its own LSTM cell, loss, minibatch cutting and optimizer updates);
- ``torch_reference``: ``torch.nn.LSTM`` + ``nn.Linear`` with one-hot inputs and ``torch.optim`` (needs torch);
- ``project``: the project's own loop (``train.loop.start_run`` / ``train_epoch``) with per-step records;
- ``trajectory``: how far the trajectories separate over steps (the command's table and plot);
- ``spread``: the held-out NLL of the char-RNN recipe over seeds (project and PyTorch).

Entry point: ``python -m lstm_jax.commands.equivalence`` (see there).
"""
