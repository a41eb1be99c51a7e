"""Run configs (`get_config(variant)`), the classifier each dataset uses, and
the fields every chain config shares."""

import ml_collections


def add_checkpoint_and_log(c: ml_collections.ConfigDict) -> None:
  """Adds `c.checkpoint` and `c.log`, read by the stage loop of both chains
  (`jacdistill/chain.py`)."""
  c.checkpoint = ml_collections.ConfigDict()
  c.checkpoint.every_steps = 2000  # Save this often within a stage (and at its end).
  c.checkpoint.keep = 2  # Checkpoints kept per stage (the older is the fallback).

  c.log = ml_collections.ConfigDict()
  c.log.every_steps = 100  # Average and write train metrics this often.
  c.log.progress_seconds = 30.0  # At most this long between progress lines.


def classifier_config(dataset: str):
  """The external classifier's training config for `dataset` (data.name)."""
  # pylint: disable-next=g-import-not-at-top
  from configs import celeba_classifier, classifier
  if dataset == 'celeb_a':
    return celeba_classifier.get_config()
  return classifier.get_config()
