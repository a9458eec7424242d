"""The stream processor: bus micro-batches → lake, online features, scores, work orders."""

from pitstop.processor.processor import BatchReport, Processor

__all__ = ["BatchReport", "Processor"]
