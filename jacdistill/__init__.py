"""jacdistill: Jacobian supervision of long-code student autoencoders by short-code teachers."""
