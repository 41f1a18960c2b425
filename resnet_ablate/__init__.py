"""resnet-ablate: reproduce the ablations of *Identity Mappings in Deep Residual Networks* (He et al., 2016)."""

__version__ = "0.1.0"
