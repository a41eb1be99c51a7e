"""svhn_grow.py's first steps through the real tfds code path, on mock data."""

import tensorflow_datasets as tfds

from configs import svhn_grow
from jacdistill import chain


def test_svhn_config_trains_its_first_stages_on_mock_tfds(tmp_path):
  config = svhn_grow.get_config('smoke')
  config.train.steps_per_stage = 6
  config.checkpoint.every_steps = 3
  config.log.every_steps = 3
  config.eval.num_images = 4
  with tfds.testing.mock_data(num_examples=96):
    summary = chain.train_and_evaluate(config, str(tmp_path))
  stages = summary['stages']
  assert [s['latent_dim'] for s in stages] == [2, 3]
  assert all(s['steps'] == 6 for s in stages)
  assert stages[1]['train_losses']['jac'] >= 0
  assert (tmp_path / 'stage_01' / 'traversals.png').exists()
