"""topaz-lightning: positive-unlabeled CNN particle picking for cryo-EM micrographs."""

__version__ = "0.1.0"
