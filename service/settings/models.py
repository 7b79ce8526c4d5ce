"""Settings of what is served: the repository, engines and the model lifecycle (a field
group of :class:`Settings`)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field


class ModelSettings(BaseModel):
    """Which models serve, on which engine, and how they load and unload while serving."""

    # --- models --------------------------------------------------------------------
    repository: Path = Field(Path("models"), description="Model repository folder.")
    default_model: str | None = Field(
        None, description="Model used when a request names none (default: first by name)."
    )
    engine: Literal["onnxruntime", "torchscript"] | None = Field(
        None,
        description="Force this engine for every model that has its artifact "
        "(overrides the model configs).",
    )
    providers: str | None = Field(
        None,
        description="Comma-separated ONNX Runtime execution providers in preference order "
        "(overrides configs), e.g. 'CPUExecutionProvider'.",
    )
    intra_op_threads: int = Field(
        0, ge=0, description="Threads per engine for one batch (0: number of cores)."
    )
    decode_threads: int = Field(
        0, ge=0, description="Threads decoding and resizing images (0: number of cores)."
    )
    intra_op_spinning: bool = Field(
        False,
        description="Let ONNX Runtime's idle intra-op threads spin-wait for work. Off: they "
        "would burn the CPU the decode threads need (see docs/BENCHMARKS.md); on only with "
        "cores to spare.",
    )
    cpu_turns: Literal["auto", "on", "off"] = Field(
        "auto",
        description="CPU engines and image decoding take turns on the cores: decodes wait "
        "while a CPU batch runs, a batch waits (cpu_turn_wait_ms at most) for the decodes in "
        "flight. 'auto': on when the engines' intra-op threads cover every core (the "
        "default), so they would otherwise collide (see service/batching/turns.py).",
    )
    cpu_turn_wait_ms: float = Field(
        250.0,
        ge=0,
        le=1000,
        description="Longest a CPU batch waits for the images being decoded to join it "
        "(long enough for a full batch's decodes: shorter makes smaller batches and makes "
        "an image decoded late wait one batch more).",
    )
    trt_cache_dir: Path = Field(
        Path(".cache/tensorrt"), description="TensorRT engine cache folder (GPU only)."
    )
    warmup: bool = Field(True, description="Run each model once per batch size before ready.")

    # --- model lifecycle -------------------------------------------------------------
    model_control_mode: Literal["none", "explicit", "poll"] = Field(
        "none",
        description="Triton's names. 'none': the repository is read once at start-up. "
        "'explicit': the V2 repository API loads and unloads models. 'poll': the repository "
        "is re-read every repository_poll_secs; a new or removed version folder, or a "
        "changed config.json, is loaded (beside what serves) or unloaded.",
    )
    repository_poll_secs: float = Field(
        15.0,
        ge=0.5,
        le=3600,
        description="Poll mode: seconds between two reads of the repository.",
    )
    admin_api_key: str | None = Field(
        None,
        description="Key of the repository API (header 'X-Admin-Key', gRPC metadata "
        "'x-admin-key'); distinct from api_key. Required by the explicit and poll modes.",
    )
    admin_api_key_file: Path | None = Field(
        None, description="Read the admin key from this file (stripped), e.g. a mounted secret."
    )
    gate_recheck_secs: float = Field(
        0.0,
        ge=0,
        description="Re-run each serving version's correctness gate this often, through "
        "its batcher (0: only at load). A refusal is exposed (metric, index, log), not "
        "acted on.",
    )
    model_memory_budget_bytes: int = Field(
        0,
        ge=0,
        description="Memory the loaded model versions may hold together (0: no limit), "
        "each estimated as model_memory_factor x its artifact size; a load past it is "
        "refused. A swap holds the old and the new version at once. See docs/LIMITS.md.",
    )
    model_memory_factor: float = Field(
        8.0,
        ge=1.0,
        le=100.0,
        description="Resident memory of a loaded version per byte of its artifact (weights, "
        "the engine's copies, activation arenas): measured 3.3x for a ResNet-18 session, "
        "7.2x once warmed up to batch 32 on CPU; see docs/LIMITS.md.",
    )

    # --- model selection -----------------------------------------------------------
    models: str | None = Field(
        None,
        description="Comma-separated names of the repository's models to serve (default: "
        "every model); the others are never read, so they cost no start-up time or memory.",
    )
