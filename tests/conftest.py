"""Shared pytest set-up."""

import jax

# XLA:CPU takes seconds to compile each partitionable threefry draw of a
# multi-dimensional shape (every conv kernel init); the classic scheme compiles
# in a fraction of that. launch/ scripts make the same choice, so tests and
# runs draw the same numbers.
jax.config.update('jax_threefry_partitionable', False)
