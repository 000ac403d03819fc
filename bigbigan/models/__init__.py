"""Networks: the generator G(z), the encoder E(x) and the joint discriminator D(x, z)."""
