"""jacdistill: Jacobian supervision of long-code student autoencoders by short-code teachers.

Importing the package changes no global JAX setting; the library draws its
random numbers under a scheme of its own, scoped to its calls
(`jacdistill.rng`).
"""
