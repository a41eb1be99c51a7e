"""Run configs (`get_config(variant)`), and the classifier each dataset uses."""


def classifier_config(dataset: str):
  """The external classifier's training config for `dataset` (data.name)."""
  # pylint: disable-next=g-import-not-at-top
  from configs import celeba_classifier, classifier
  if dataset == 'celeb_a':
    return celeba_classifier.get_config()
  return classifier.get_config()
