"""The Pallas kernels of the recurrences (GPU: Triton; TPU: Mosaic): ``lstm_pallas``, ``rnn_pallas`` and
``gru_pallas`` (batch-blocked, on the design in ``tiles``), the persistent GPU LSTM (``lstm_persistent``), their
block sizes (``layout``), the shapes they take (``envelope``) and the batch split over devices (``sharded``)."""
