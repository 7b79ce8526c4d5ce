"""Response bodies, declared once so the OpenAPI schema documents them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from service.postprocess import Prediction


class ImageResult(BaseModel):
    filename: str | None = Field(None, description="The multipart file name, if any.")
    predictions: list[Prediction]


class Timings(BaseModel):
    """Where the time went, in milliseconds (slowest image of the request)."""

    decode_ms: float
    queue_ms: float
    inference_ms: float
    total_ms: float
    batch_size: int = Field(description="Images in the largest engine batch this request joined.")


class ClassifyResponse(BaseModel):
    model: str
    version: int
    weights: str = Field(description="Weight origin; 'random (untrained)' is never hidden.")
    engine: str
    provider: str
    precision: str
    results: list[ImageResult]
    timings: Timings


class ModelInfo(BaseModel):
    name: str
    version: int
    default: bool
    status: str
    error: str | None = None
    architecture: str
    engine: str
    provider: str
    precision: str
    weights: str
    input_size: list[int]
    num_classes: int
    max_batch_size: int
    parity: dict[str, Any] = Field(default_factory=dict)
    quantization: dict[str, Any] | None = Field(
        None, description="How an int8 version was calibrated and how it compares to fp32."
    )


class ModelsResponse(BaseModel):
    default_model: str | None
    models: list[ModelInfo]


class ErrorBody(BaseModel):
    code: str
    message: str


class ErrorResponse(BaseModel):
    error: ErrorBody
