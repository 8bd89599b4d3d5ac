"""The generator as explainee: units, GAN Dissection, artifact-unit correction and E-GBAS (DESIGN.md §10)."""
