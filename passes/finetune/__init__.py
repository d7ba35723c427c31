"""Recovery fine-tuning with distillation from the uncompressed model."""
