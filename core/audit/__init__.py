"""The dataset audit: spectral clusters of the attribution maps of each class (SpRAy), and fit-head."""
