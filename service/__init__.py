"""resnet-serve: an inference service for ResNet image classifiers."""

__version__ = "0.1.0"
