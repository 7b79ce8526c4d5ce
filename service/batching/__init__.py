"""The dynamic batcher (:mod:`.batcher`) and its admission unit (:mod:`.reservation`)."""

from service.batching.batcher import Batcher, BatcherConfig
from service.batching.reservation import Collated, ItemResult, Reservation, stack_arrays

__all__ = ["Batcher", "BatcherConfig", "Collated", "ItemResult", "Reservation", "stack_arrays"]
