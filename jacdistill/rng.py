"""How the library draws random numbers, whatever its host's JAX settings.

Every initialisation, permutation and dropout mask of the library is drawn
under JAX's classic threefry scheme (`jax_threefry_partitionable` False):
XLA:CPU compiles the partitionable scheme's draws of multi-dimensional
shapes (every conv kernel initialisation) very slowly, and the scheme
decides every checkpoint fingerprint a run records. The setting is scoped
to the library's own calls (`draws`) and never changed for the process, so
a notebook that imports the library keeps its own random numbers.
"""

import functools
from typing import Callable

import jax

THREEFRY_PARTITIONABLE = False


def scheme():
  """A context in which JAX draws as the library does."""
  return jax.threefry_partitionable(THREEFRY_PARTITIONABLE)


def draws(fn: Callable) -> Callable:
  """`fn` called (and, for a jitted function, lowered) under `scheme()`.

  The scheme is part of what a jitted function is compiled for, so a step
  built once is traced and run under the library's scheme whatever the
  caller's setting is when it calls it.
  """
  @functools.wraps(fn)
  def call(*args, **kwargs):
    with scheme():
      return fn(*args, **kwargs)

  if hasattr(fn, 'lower'):
    def lower(*args, **kwargs):
      with scheme():
        return fn.lower(*args, **kwargs)
    call.lower = lower
  return call
