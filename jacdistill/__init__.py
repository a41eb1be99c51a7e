"""jacdistill: Jacobian supervision of long-code student autoencoders by short-code teachers.

Importing the package fixes one JAX setting that every random draw of the
library depends on, so that a notebook, the scripts in launch/ and the tests
draw the same numbers: `jax_threefry_partitionable` is False (JAX's classic
threefry scheme). XLA:CPU compiles the partitionable scheme's draws of
multi-dimensional shapes (every conv kernel initialisation) very slowly, and
changing it changes every initialisation, permutation and checkpoint
fingerprint of a run.
"""

import jax

THREEFRY_PARTITIONABLE = False
jax.config.update('jax_threefry_partitionable', THREEFRY_PARTITIONABLE)
