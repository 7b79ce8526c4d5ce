"""resnet-serve: an inference service for ResNet image classifiers."""

# The one place the version is written: pyproject.toml reads it from here (setuptools
# `attr`, parsed statically), the image labels and /docs report it. CHANGELOG.md says
# what each version changed.
__version__ = "0.2.0.dev0"
