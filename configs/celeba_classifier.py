"""The external CelebA attribute classifier that scores flip accuracy.

A multi-label CNN (one sigmoid logit per attribute, all 40 of
celeba.CELEB_A_ATTRIBUTES) trained once on the celeb_a train stream
and cached like the class classifiers (see
`jacdistill.classifier.train_attribute_classifier` and
`jacdistill.classifier_cache.load_or_train_classifier`); it judges every CelebA chain, whatever the
chain's image size (decoded images are resized to `image_size`) or its
attribute subset (its logits are looked up by name). Not yet trained on the
real data (the development machine has no CelebA): its accuracy and
training time are unmeasured.

  python launch/classifier.py --config=configs/celeba_attr.py --config.data.tfds_data_dir=DIR
"""

import ml_collections

from configs import classifier


def get_config() -> ml_collections.ConfigDict:
  """Training fields of `jacdistill.classifier.train_attribute_classifier`.

  configs/classifier.py's, with a step count for the stream, wider convs
  for 64x64 RGB faces and the fields CelebA adds.
  """
  config = classifier.get_config()
  del config.epochs  # A stream is measured in steps.
  # Adam steps on the shuffled, flipped train stream (about 5 epochs).
  config.steps = 6000
  # Peak Adam learning rate; cosine-decayed to 0 over training.
  config.learning_rate = 1e-3
  # Height = width of its input: the 178x178 crops resized to this.
  config.image_size = 64
  # Output channels of the 3x3 convs; each conv is followed by a 2x2 max-pool.
  config.widths = (32, 64, 128, 256)
  # Width of the hidden dense layer.
  config.hidden = 256
  # Test images it is scored on (0 = the whole test split, 19,962).
  config.test_examples = 0
  return config
