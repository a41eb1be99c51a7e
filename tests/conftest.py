"""Shared pytest set-up."""

import os
import sys

import jax

# Tests import `configs.*` as launch/main.py does, from the repository root.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# XLA:CPU takes seconds to compile each partitionable threefry draw of a
# multi-dimensional shape (every conv kernel init); the classic scheme compiles
# in a fraction of that. launch/ scripts make the same choice, so tests and
# runs draw the same numbers.
jax.config.update('jax_threefry_partitionable', False)
