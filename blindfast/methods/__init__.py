"""The blind methods: DDM, CL-DPS, LatentDEM, each registering itself with ``blindfast deblur --method``."""
