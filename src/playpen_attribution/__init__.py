"""playpen-attribution: which fine-tuning rows teach a model a task."""
__version__ = "0.1.0"
