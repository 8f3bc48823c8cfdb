"""upreid: UP-ReID pre-training, re-ID fine-tuning, evaluation and reports."""

__version__ = "0.1.0"
