"""The external classifier that scores disentanglement (docs/method.md, swap accuracy).

A small CNN trained once per dataset on its train split and cached (see
`jacdistill.classifier_cache.load_or_train_classifier`), so every run on a
dataset is judged by the same classifier. These defaults reach >= 91% test accuracy
on Fashion-MNIST in a few minutes on two CPU cores.

Override fields with `--config.classifier.epochs=...` where a launcher nests
this config, or copy `get_config()` and change a few values.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  """Training fields of `jacdistill.classifier.train_classifier`."""
  config = ml_collections.ConfigDict()
  # Passes over the train split.
  config.epochs = 10
  # Examples per Adam step.
  config.batch_size = 128
  # Peak Adam learning rate; cosine-decayed to 0 over training.
  config.learning_rate = 2e-3
  # Seeds the initialisation, the batch order and the dropout masks.
  config.seed = 0
  # Dropout rate before the last dense layer, active only in training.
  config.dropout = 0.3
  # Output channels of the 3x3 convs; each conv is followed by a 2x2 max-pool.
  config.widths = (16, 32)
  # Width of the hidden dense layer.
  config.hidden = 128
  return config
